"""``dnabert-serve variants``: variant effects offline, the same numbers as the HTTP endpoint.

The command is run in process (``service.cli.main``) on the inputs of
:mod:`tests.service.contract.test_variant_windows`, with batches of two records so that the
streamed outputs (VCF header once, one JSON list, one TSV header) span several batches, and its
answers are compared with ``POST /variants/promoter`` on the same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.cli import main
from service.commands import variants as command
from tests.service.api.test_variants import URL, upload
from tests.service.contract.test_variant_windows import fasta_bytes, genome, variant_vcf
from tests.service.robustness import make_settings, needs_models, run, serving

pytestmark = needs_models
CONTIGS = genome()


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    pysam = pytest.importorskip("pysam")
    monkeypatch.setattr(command, "BATCH", 2)  # several batches for a dozen records
    vcf, ref = tmp_path / "calls.vcf", tmp_path / "ref.fa"
    vcf.write_text(variant_vcf(CONTIGS))
    pysam.tabix_compress(str(vcf), str(tmp_path / "calls.vcf.gz"))
    ref.write_bytes(fasta_bytes(CONTIGS))
    return tmp_path / "calls.vcf.gz", ref


def cli(*args: str) -> int:
    models = os.environ.get("DNABERT_TEST_MODELS_DIR", str(Path(__file__).resolve().parents[2] / "models"))
    return main(["variants", *args, "--models-dir", models, "--device", "cpu", "--quiet"])


def test_offline_answers_are_the_servers(inputs, tmp_path, capsys):
    vcf, ref = inputs
    assert cli("--vcf", str(vcf), "--reference", str(ref), "--model", "base", "-o", str(tmp_path / "out.json")) == 0
    assert "wrote the effects of 14 variants (model base, strand both)" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.part"))
    offline = json.loads((tmp_path / "out.json").read_text())

    async def body():
        async with serving(make_settings()) as client:
            resp = await client.post(URL, params={"model": "base"}, files=upload(vcf.read_bytes(), ref.read_bytes()))
            return resp.json()

    assert offline == run(body())  # every field of every entry, values to the last bit


def test_vcf_and_tsv_outputs_span_the_batches(inputs, tmp_path, capsys):
    pysam = pytest.importorskip("pysam")
    vcf, ref = inputs
    assert cli("--vcf", str(vcf), "--reference", str(ref), "--model", "base", "--strand", "-",
               "-o", str(tmp_path / "out.vcf")) == 0
    assert cli("--vcf", str(vcf), "--reference", str(ref), "--model", "base", "--strand", "-", "--format", "tsv") == 0
    tsv = capsys.readouterr().out.splitlines()
    text = (tmp_path / "out.vcf").read_text()
    assert text.count("#CHROM") == 1 and text.count("##INFO=<ID=DNABERT_DELTA,") == 1
    with pysam.VariantFile(str(tmp_path / "out.vcf")) as reader:
        assert reader.header.info["DNABERT_DELTA"].type == "Float"
        records = list(reader)
    assert len(records) == 11 and sum(max(1, len(r.alts or ())) for r in records) == len(tsv) - 1 == 14
    assert tsv[0].startswith("id\tchrom\tpos\t") and sum(line.startswith("id\t") for line in tsv) == 1
    snv = next(r for r in records if r.id == "snv_tata")
    row = next(line.split("\t") for line in tsv if line.startswith("snv_tata\t"))
    assert row[7] == "-" and snv.info["DNABERT_STRAND"] == ("-",)
    assert snv.info["DNABERT_DELTA"][0] == pytest.approx(float(row[10]), abs=1e-8)


def test_errors_exit_2_and_leave_no_output(inputs, tmp_path, capsys):
    vcf, ref = inputs
    bad = tmp_path / "bad.vcf"
    bad.write_text(variant_vcf(CONTIGS) + "chr1\tnine\t.\tA\tG\t.\t.\t.\tGT\t0/1\n")  # after 5 batches
    out = tmp_path / "out.vcf"
    assert cli("--vcf", str(bad), "--reference", str(ref), "--model", "base", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "error [invalid_vcf]: VCF line 20: POS must be an integer" in err, err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    assert cli("--vcf", str(vcf), "--reference", str(ref), "-o", str(tmp_path / "out.xlsx")) == 2
    assert "cannot tell the output format" in capsys.readouterr().err
    assert cli("--vcf", str(vcf), "--reference", str(tmp_path / "none.fa")) == 2
    assert "reference_unavailable" in capsys.readouterr().err
    assert cli("--vcf", str(tmp_path / "none.vcf"), "--reference", str(ref)) == 2
    assert "no such VCF file" in capsys.readouterr().err
