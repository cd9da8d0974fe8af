"""``dnabert-serve explain``: in-silico mutagenesis offline, to JSON, bedGraph, PNG or SVG.

Called in-process (``service.cli.main``). The numbers must be the server's: the JSON of the
command is compared with ``POST /explain/...`` on the same records, and the command has no limit
on mutants (``max_mutants`` is an HTTP limit).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from service.cli import main
from tests.service.robustness import FASTA, fasta, make_settings, needs_models, run, serving, small_models_dir

pytestmark = needs_models

SEQ = "TTGACAGCTAGCTCAGTCCTAGGTATAATGCNAGC"


@pytest.fixture
def models(tmp_path, monkeypatch):
    """The default promoter model and the lncRNA model, one thread each."""
    root = small_models_dir(tmp_path, "cnn_bilstm_max", lncrna=True)
    monkeypatch.setenv("DNABERT_INTRA_OP_THREADS", "1")
    monkeypatch.setenv("DNABERT_TOKENIZER_THREADS", "1")
    monkeypatch.setenv("DNABERT_MAX_MUTANTS", "10")  # an HTTP limit: offline it does not apply
    return root


def _http(models, path: str, records: list[tuple[str, str]]) -> dict:
    async def go():
        settings = make_settings(models, default_promoter_model="cnn_bilstm_max", max_mutants=30_000)
        async with serving(settings) as client:
            resp = await client.post(path, content=fasta(records), headers=FASTA)
            assert resp.status_code == 200, resp.text
            return resp.json()

    return run(go())


def test_json_is_the_servers_answer(models, tmp_path, capsys):
    records = [("tata", SEQ), ("rna", SEQ[:20].replace("T", "u"))]
    (tmp_path / "in.fa").write_bytes(fasta(records))
    out = tmp_path / "out.json"
    assert main(["explain", str(tmp_path / "in.fa"), "-o", str(out), "--models-dir", str(models)]) == 0
    err = capsys.readouterr().err
    assert "explain" in err and "seq/s" in err  # the progress bar
    assert f"wrote the explanation of 2 records ({3 * len(SEQ) + 1 + 60} mutants, model cnn_bilstm_max)" in err
    offline = json.loads(out.read_text())
    assert offline["model"] == "cnn_bilstm_max" and offline["count"] == 2
    served = _http(models, "/explain/promoter", records)
    for a, b in zip(offline["results"], served["results"], strict=True):
        assert a["id"] == b["id"] and a["mutants"] == b["mutants"] and a["flags"] == b["flags"]
        assert np.allclose(a["changes"], b["changes"], atol=1e-6, rtol=0)
        assert a["reference"] == pytest.approx(b["reference"], abs=1e-6)


def test_lncrna_bedgraph_and_pictures(models, tmp_path, capsys):
    (tmp_path / "one.fa").write_bytes(fasta([("lnc", SEQ)]))
    args = ["--task", "lncrna-localization", "--models-dir", str(models), "--quiet"]
    assert main(["explain", str(tmp_path / "one.fa"), "-o", str(tmp_path / "i.bedgraph"), *args]) == 0
    text = (tmp_path / "i.bedgraph").read_text()
    assert text.count("track type=bedGraph") == 3
    assert len([line for line in text.splitlines() if line.startswith("lnc\t")]) == 3 * len(SEQ)
    assert main(["explain", str(tmp_path / "one.fa"), "-o", str(tmp_path / "i.png"), "--label", "cytoplasm",
                 *args]) == 0
    assert (tmp_path / "i.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", str(tmp_path / "one.fa"), "--format", "svg", *args]) == 0
    assert ET.fromstring(capsys.readouterr().out).tag.endswith("svg")


def test_mistakes_exit_2_with_one_line(models, tmp_path, capsys):
    (tmp_path / "two.fa").write_bytes(fasta([("a", SEQ), ("b", SEQ)]))
    (tmp_path / "long.fa").write_bytes(fasta([("long", "ACGT" * 76)]))
    base = ["--models-dir", str(models), "--quiet"]
    cases = [
        (["explain", str(tmp_path / "two.fa"), "-o", str(tmp_path / "x.png"), *base], "one_record_per_image"),
        (["explain", str(tmp_path / "two.fa"), "-o", str(tmp_path / "x.xlsx"), *base], "*.bedgraph"),
        (["explain", str(tmp_path / "long.fa"), *base], "input length, 300 nt"),
        (["explain", str(tmp_path / "two.fa"), "--label", "nucleus", *base], "--label is for"),
        (["explain", str(tmp_path / "missing.fa"), *base], "missing.fa"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.startswith("dnabert-serve: error") and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()
