"""``dnabert-serve scan``: the offline scan streams a FASTA file and writes the numbers the HTTP
endpoint answers, in every format (bigWig included)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from service.cli import main
from service.contract.windows import reverse_complement
from tests.service.api.test_scan import PROMOTER_SEQ, random_dna
from tests.service.robustness import FASTA, fasta, make_settings, needs_models, run, serving, small_models_dir
from tests.service.track_formats import parse_bed6, parse_bedgraph

pytestmark = needs_models
MODEL = "cnn_bilstm_max"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return small_models_dir(tmp_path_factory.mktemp("scan-cli"), MODEL)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[bytes, dict]:
    """Two loci (one placed by a samtools region, with a minus-strand promoter and an N gap) and
    a short record, and what POST /scan/promoter answers for them in every format."""
    locus = random_dna(2500, 21)
    locus = locus[:1000] + reverse_complement(PROMOTER_SEQ) + locus[1300:1800] + "N" * 120 + locus[1920:]
    body = fasta([("chr5:20001-22500", locus), ("contig_7", random_dna(900, 22)), ("short", "ACGTACGTTT")])
    models_dir = small_models_dir(tmp_path_factory.mktemp("scan-http"), MODEL)

    async def answers():
        async with serving(make_settings(models_dir, default_promoter_model=MODEL)) as client:
            return {fmt: (await client.post("/scan/promoter", params={"format": fmt, "stride": 30},
                                            content=body, headers=FASTA)).text
                    for fmt in ("json", "bedgraph", "bed", "ndjson")}

    return body, run(answers())


def _scan(tmp_path, models, *args: str) -> int:
    return main(["scan", *args, "--models-dir", str(models), "--device", "cpu", "--quiet", "--stride", "30"])


def _rounded(value):
    """Floats to 5 decimals, anywhere in a JSON value (offline and HTTP batch the windows
    differently: the same numbers to float32 precision)."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _values(tracks: list[dict]) -> list[list[tuple]]:
    return [[row[:3] for row in t["rows"]] for t in tracks], [[row[3] for row in t["rows"]] for t in tracks]


def test_offline_bedgraph_bed_and_ndjson_are_the_http_answers(tmp_path, models, genome):
    body, http = genome
    src = tmp_path / "genome.fa.gz"
    src.write_bytes(gzip.compress(body))
    for fmt in ("bedgraph", "bed", "ndjson"):
        assert _scan(tmp_path, models, str(src), "-o", str(tmp_path / f"out.{fmt}")) == 0
    got = {fmt: (tmp_path / f"out.{fmt}").read_text() for fmt in ("bedgraph", "bed", "ndjson")}
    (offline_rows, offline_values), (http_rows, http_values) = (_values(parse_bedgraph(got["bedgraph"])),
                                                                _values(parse_bedgraph(http["bedgraph"])))
    assert offline_rows == http_rows and len(offline_rows) == 2
    np.testing.assert_allclose(np.concatenate(offline_values), np.concatenate(http_values), atol=1e-6)
    assert parse_bed6(got["bed"]) == parse_bed6(http["bed"])
    assert any(row[5] == "-" and row[1] <= 21000 and row[2] >= 21300 for row in parse_bed6(got["bed"])[1])
    offline = [json.loads(line) for line in got["ndjson"].splitlines()]
    online = [json.loads(line) for line in http["ndjson"].splitlines()]
    assert _rounded(offline) == _rounded(online) and len(offline) > 100
    assert not list(tmp_path.glob("*.part"))


def test_offline_json_to_stdout_is_the_http_json(tmp_path, models, genome, capsys):
    body, http = genome
    src = tmp_path / "genome.fa"
    src.write_bytes(body.replace(b"\n", b"\r\n"))
    assert _scan(tmp_path, models, str(src)) == 0
    captured = capsys.readouterr()
    offline, online = json.loads(captured.out), json.loads(http["json"])
    assert "scanned 3 records" in captured.err
    windows = [[w.pop("probability") for w in r["windows"]] for answer in (offline, online) for r in answer["results"]]
    np.testing.assert_allclose(np.concatenate(windows[:3]), np.concatenate(windows[3:]), atol=1e-6)
    assert _rounded(offline) == _rounded(online)
    assert offline["results"][0]["skipped_windows"] > 0 and offline["results"][2]["flags"] == ["shorter_than_window"]


def test_bigwig_holds_the_bedgraph_values_one_file_per_strand(tmp_path, models, genome):
    pyBigWig = pytest.importorskip("pyBigWig")
    body, http = genome
    src = tmp_path / "genome.fa"
    src.write_bytes(body)
    assert _scan(tmp_path, models, str(src), "-o", str(tmp_path / "scan.bw")) == 0
    assert sorted(p.name for p in tmp_path.glob("scan*")) == ["scan.minus.bw", "scan.plus.bw"]
    for track, name in zip(parse_bedgraph(http["bedgraph"]), ("plus", "minus")):
        bw = pyBigWig.open(str(tmp_path / f"scan.{name}.bw"))
        assert bw.chroms() == {"chr5": 22500, "contig_7": 900, "short": 10}
        for chrom, start, end, value in track["rows"]:
            assert bw.values(chrom, start, end) == pytest.approx([value] * (end - start), abs=1e-6)
        bw.close()
    assert _scan(tmp_path, models, str(src), "--strand", "-", "-o", str(tmp_path / "minus.bw")) == 0
    assert (tmp_path / "minus.bw").is_file() and not (tmp_path / "minus.minus.bw").exists()


def test_errors_are_one_line_and_leave_no_output(tmp_path, models, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text(">ok\n" + "ACGT" * 100 + "\n>broken\nACGTACGT\nACGTXCGT\n")
    out = tmp_path / "out.bedgraph"
    assert _scan(tmp_path, models, str(bad), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "[invalid_sequence] (record broken)" in err and "position 13" in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    good = tmp_path / "good.fa"
    good.write_text(">a\n" + "ACGT" * 100 + "\n")
    assert _scan(tmp_path, models, str(good), "-o", str(tmp_path / "out.xlsx")) == 2
    assert "cannot tell the output format" in capsys.readouterr().err
    assert _scan(tmp_path, models, str(good), "--model", "lncrna") == 2
    assert "model" in capsys.readouterr().err
    assert _scan(tmp_path, models, str(good), "--format", "bigwig") == 2
    assert "-o OUT.bw" in capsys.readouterr().err
    unsorted = tmp_path / "unsorted.fa"
    unsorted.write_text(">chr1:501-900\n" + "ACGT" * 100 + "\n>chr1:1-400\n" + "ACGT" * 100 + "\n")
    assert _scan(tmp_path, models, str(unsorted), "-o", str(tmp_path / "u.bw")) == 2
    assert "in order" in capsys.readouterr().err and not list(tmp_path.glob("u.*"))
