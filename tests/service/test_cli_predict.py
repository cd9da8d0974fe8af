"""``dnabert-serve predict``: offline predictions from a FASTA file to CSV, TSV or JSON.

Called in-process (``service.cli.main``) and once as ``python -m service predict`` in a child
process. The scores are checked against :func:`service.runtime.offline.predict_sequences` (the same
stages with an offline batcher of its own, batches cut differently), never against hard-coded values.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS_DIR = Path(os.environ.get("DNABERT_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
if not (MODELS_DIR / "promoter").is_dir():
    pytest.skip(f"no promoter models in {MODELS_DIR} (set DNABERT_TEST_MODELS_DIR)", allow_module_level=True)
HAS_LNCRNA = (MODELS_DIR / "lncrna-localization").is_dir()
needs_lncrna = pytest.mark.skipif(not HAS_LNCRNA, reason="no lncRNA model")

from service.cli import main  # noqa: E402
from service.contract.card import ModelCard  # noqa: E402
from service.contract.taskfile import TaskFile  # noqa: E402
from service.contract.tasks import PROMOTER_VARIANTS  # noqa: E402
from service.runtime import defaults  # noqa: E402
from service.runtime.model import OnnxModel  # noqa: E402
from service.runtime.offline import predict_sequences  # noqa: E402
from service.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LNCRNA_LABELS = ("nucleus", "cytoplasm", "extracellular_vesicle")
# what the CLI answers without --model: the operator's setting, else promoter/task.json's choice, else
# the project's default; labels at that model's default threshold (its card's, all: the task file's)
_TASK_FILE = TaskFile.load(MODELS_DIR, "promoter")
DEFAULT_MODEL = defaults.default_model(Settings(models_dir=MODELS_DIR), "promoter", _TASK_FILE)
DEFAULT_THRESHOLD = defaults.promoter_threshold(
    None, Settings(models_dir=MODELS_DIR),
    [ModelCard.load(MODELS_DIR / "promoter" / m) for m in
     (PROMOTER_VARIANTS if DEFAULT_MODEL == "all" else (DEFAULT_MODEL,))], _TASK_FILE)
VARIANTS = [v for v in PROMOTER_VARIANTS if (MODELS_DIR / "promoter" / v).is_dir()]
DEFAULT_COLUMNS = sorted(VARIANTS) if DEFAULT_MODEL == "all" else []
"""The per-variant columns of the default model's table (``all`` has one per variant)."""
TOL = 1e-5  # the CLI and predict_sequences batch differently


# -- the input file ---------------------------------------------------------------------------------

def make_records(seed: int, n: int, lo: int, hi: int, prefix: str = "rec") -> list[tuple[str, str]]:
    """Random-length records: some lowercase, some RNA (U), some with N and IUPAC codes."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        seq = rng.choices("ACGT", k=rng.randint(lo, hi))
        if i % 5 == 3:
            for _ in range(rng.randint(1, 4)):
                seq[rng.randrange(len(seq))] = rng.choice("NNRY")
        text = "".join(seq)
        if i % 5 == 1:
            text = text.lower()
        elif i % 5 == 2:
            text = text.replace("T", "U")
        records.append((f"{prefix}{i:03d}_{rng.randrange(10**6)}", text))
    return records


def write_fasta(path: Path, records: list[tuple[str, str]], compress: bool = False) -> Path:
    lines = []
    for rid, seq in records:
        lines.append(f">{rid} a test record, {len(seq)} nt")
        lines.extend(seq[i : i + 61] for i in range(0, len(seq), 61))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture(scope="module")
def records() -> list[tuple[str, str]]:
    return make_records(2024, 50, 30, 800)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory, records) -> Path:
    return write_fasta(tmp_path_factory.mktemp("cli") / "input.fasta", records)


@pytest.fixture(autouse=True)
def model_env(monkeypatch):
    """Settings come from DNABERT_* variables, as they would for a user."""
    monkeypatch.setenv("DNABERT_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("DNABERT_INTRA_OP_THREADS", "1")
    monkeypatch.setenv("DNABERT_TOKENIZER_THREADS", "1")


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "DNABERT_MODELS_DIR": str(MODELS_DIR),
        "DNABERT_INTRA_OP_THREADS": "1",
        "DNABERT_TOKENIZER_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }


# -- references ---------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str], OnnxModel] = {}


def reference(task: str, name: str, records: list[tuple[str, str]]):
    """Scores of ``predict_sequences``: (N,) for promoter variants (all: their mean), (N, 3) for lncRNA."""
    if name == "all":
        return np.mean([reference(task, v, records) for v in PROMOTER_VARIANTS], axis=0)
    if (task, name) not in _MODELS:
        _MODELS[(task, name)] = OnnxModel(MODELS_DIR / task / name, threads=1)
    return predict_sequences(_MODELS[(task, name)], [s for _, s in records], [r for r, _ in records]).scores


def expected_flags(seq: str) -> tuple[int, set[str]]:
    n_amb = sum(seq.upper().count(c) for c in "NRY")
    flags = set()
    if n_amb:
        flags.add("ambiguous_bases")
    if "U" in seq or "u" in seq:
        flags.add("rna_input")
    return n_amb, flags


# -- reading the outputs --------------------------------------------------------------------------------

def read_table(text: str, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader)
    rows = [dict(zip(header, row, strict=True)) for row in reader]
    return header, rows


def promoter_header(variants: list[str]) -> list[str]:
    return ["id", "length", "probability", "label", "model", *[f"p_{v}" for v in variants],
            "truncated", "ambiguous_bases", "flags"]


def check_promoter_rows(rows: list[dict], records, model_column: str) -> None:
    """One row per record in file order, with the record's length, flags and the model's score."""
    assert [r["id"] for r in rows] == [rid for rid, _ in records]
    want = reference("promoter", DEFAULT_MODEL, records)
    for row, (rid, seq), p in zip(rows, records, want):
        prob = float(row["probability"])
        assert abs(prob - p) <= TOL, f"{rid}: {prob} vs {p}"
        assert row["label"] == ("promoter" if prob >= DEFAULT_THRESHOLD else "non_promoter")
        assert row["model"] == model_column
        assert int(row["length"]) == len(seq)
        n_amb, flags = expected_flags(seq)
        assert int(row["ambiguous_bases"]) == n_amb
        got_flags = set(row["flags"].split(";")) if isinstance(row["flags"], str) else set(row["flags"])
        assert got_flags - {"", "truncated"} == flags, rid


def json_rows(data: dict) -> list[dict]:
    assert data["count"] == len(data["results"])
    return data["results"]


# -- tests -------------------------------------------------------------------------------------------------

def test_output_format_follows_the_suffix(tmp_path, fasta, records, capsys):
    outputs = {}
    for suffix in ("csv", "tsv", "json"):
        out = tmp_path / f"predictions.{suffix}"
        assert main(["predict", str(fasta), "--task", "promoter", "-o", str(out), "--quiet"]) == 0
        assert f"wrote {len(records)} predictions to {out}" in capsys.readouterr().err
        outputs[suffix] = out.read_text()

    header, csv_rows = read_table(outputs["csv"], ",")
    assert header == promoter_header(DEFAULT_COLUMNS)
    check_promoter_rows(csv_rows, records, DEFAULT_MODEL)

    header, tsv_rows = read_table(outputs["tsv"], "\t")
    assert header == promoter_header(DEFAULT_COLUMNS)
    assert "\t" in outputs["tsv"].splitlines()[1]
    check_promoter_rows(tsv_rows, records, DEFAULT_MODEL)

    data = json.loads(outputs["json"])
    assert data["task"] == "promoter" and data["model"] == DEFAULT_MODEL
    check_promoter_rows(json_rows(data), records, DEFAULT_MODEL)
    for c, t, j in zip(csv_rows, tsv_rows, data["results"]):
        assert float(c["probability"]) == float(t["probability"]) == pytest.approx(j["probability"], abs=1e-6)


def test_format_option_wins_over_the_suffix_and_stdout_works(tmp_path, fasta, records, capsys):
    out = tmp_path / "predictions.txt"
    assert main(["predict", str(fasta), "--task", "promoter", "-o", str(out), "--format", "tsv", "--quiet"]) == 0
    header, rows = read_table(out.read_text(), "\t")
    assert header == promoter_header(DEFAULT_COLUMNS)
    check_promoter_rows(rows, records, DEFAULT_MODEL)
    capsys.readouterr()

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(fasta), "--task", "promoter", "-o", str(out), "--format", "json", "--quiet"]) == 0
    check_promoter_rows(json_rows(json.loads(out.read_text())), records, DEFAULT_MODEL)
    capsys.readouterr()

    assert main(["predict", str(fasta), "--task", "promoter", "--format", "json", "--quiet"]) == 0
    check_promoter_rows(json_rows(json.loads(capsys.readouterr().out)), records, DEFAULT_MODEL)

    assert main(["predict", str(fasta), "--task", "promoter", "--quiet"]) == 0  # default: CSV on stdout
    header, rows = read_table(capsys.readouterr().out, ",")
    assert header == promoter_header(DEFAULT_COLUMNS)
    check_promoter_rows(rows, records, DEFAULT_MODEL)


def test_model_all_has_a_column_per_variant(tmp_path, fasta, records):
    out = tmp_path / "all.csv"
    assert main(["predict", str(fasta), "--task", "promoter", "--model", "all", "-o", str(out), "--quiet"]) == 0
    header, rows = read_table(out.read_text(), ",")
    assert header == promoter_header(sorted(VARIANTS))
    assert [r["id"] for r in rows] == [rid for rid, _ in records]
    for v in VARIANTS:
        want = reference("promoter", v, records)
        for row, p in zip(rows, want):
            assert abs(float(row[f"p_{v}"]) - p) <= TOL, (row["id"], v)
    for row in rows:
        assert row["model"] == "all"
        mean = sum(float(row[f"p_{v}"]) for v in VARIANTS) / len(VARIANTS)
        assert float(row["probability"]) == pytest.approx(mean, abs=1e-9)

    out = tmp_path / "all.json"
    assert main(["predict", str(fasta), "--task", "promoter", "--model", "all", "-o", str(out), "--quiet"]) == 0
    results = json_rows(json.loads(out.read_text()))
    assert [r["id"] for r in results] == [rid for rid, _ in records]
    assert all(sorted(r["variant_probabilities"]) == sorted(VARIANTS) for r in results)


@needs_lncrna
def test_lncrna_localization(tmp_path, fasta, records):
    out = tmp_path / "lncrna.tsv"
    assert main(["predict", str(fasta), "--task", "lncrna-localization", "-o", str(out), "--quiet"]) == 0
    header, rows = read_table(out.read_text(), "\t")
    assert header == ["id", "length", *LNCRNA_LABELS, "locations", "truncated", "ambiguous_bases", "flags",
                      "model"]
    assert [r["id"] for r in rows] == [rid for rid, _ in records]
    want = reference("lncrna-localization", "lncrna", records)
    for row, scores, (rid, seq) in zip(rows, want, records):
        assert int(row["length"]) == len(seq)
        for label, p in zip(LNCRNA_LABELS, scores):
            assert abs(float(row[label]) - p) <= TOL, (rid, label)
        locations = set(row["locations"].split(";")) - {""}
        assert locations == {label for label in LNCRNA_LABELS if float(row[label]) >= 0.5}

    out = tmp_path / "lncrna.json"
    assert main(["predict", str(fasta), "--task", "lncrna-localization", "-o", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["task"] == "lncrna-localization"
    assert [r["id"] for r in json_rows(data)] == [rid for rid, _ in records]


def test_gzip_input_gives_the_same_predictions(tmp_path, records):
    plain = write_fasta(tmp_path / "in.fa", records)
    packed = write_fasta(tmp_path / "in.fa.gz", records, compress=True)
    assert main(["predict", str(plain), "--task", "promoter", "-o", str(tmp_path / "plain.csv"), "--quiet"]) == 0
    assert main(["predict", str(packed), "--task", "promoter", "-o", str(tmp_path / "gz.csv"), "--quiet"]) == 0
    _, plain_rows = read_table((tmp_path / "plain.csv").read_text(), ",")
    _, gz_rows = read_table((tmp_path / "gz.csv").read_text(), ",")
    assert [r["id"] for r in gz_rows] == [rid for rid, _ in records]
    for a, b in zip(plain_rows, gz_rows):
        assert a["id"] == b["id"]
        assert abs(float(a["probability"]) - float(b["probability"])) <= 1e-6


def test_file_order_is_kept_across_chunks(tmp_path):
    """More records than one submitted piece (256): the output is still in file order."""
    many = make_records(7, 600, 20, 60, prefix="short")
    path = write_fasta(tmp_path / "many.fa", many)
    out = tmp_path / "many.csv"
    assert main(["predict", str(path), "--task", "promoter", "-o", str(out), "--quiet"]) == 0
    _, rows = read_table(out.read_text(), ",")
    check_promoter_rows(rows, many, DEFAULT_MODEL)


def test_bad_record_fails_naming_the_record(tmp_path, records, capsys):
    bad = records[:5] + [("broken_record_42", "ACGTACGT1234ACGT")] + records[5:10]
    path = write_fasta(tmp_path / "bad.fa", bad)
    out = tmp_path / "bad.csv"
    rc = main(["predict", str(path), "--task", "promoter", "-o", str(out), "--quiet"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "broken_record_42" in err
    assert not out.exists()


def test_missing_file_fails(tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "nope.fa"), "--task", "promoter", "--quiet"])
    assert rc != 0
    assert "nope.fa" in capsys.readouterr().err


def test_python_m_service_predict_in_a_child_process(tmp_path, records):
    packed = write_fasta(tmp_path / "in.fasta.gz", records, compress=True)
    out = tmp_path / "child.json"
    proc = subprocess.run(
        [sys.executable, "-m", "service", "predict", str(packed), "--task", "promoter", "-o", str(out)],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(records)} predictions" in proc.stderr
    check_promoter_rows(json_rows(json.loads(out.read_text())), records, DEFAULT_MODEL)

    bad = write_fasta(tmp_path / "bad.fasta", records[:3] + [("digits_here", "ACGT99ACGT")])
    proc = subprocess.run(
        [sys.executable, "-m", "service", "predict", str(bad), "--task", "promoter", "--quiet"],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "digits_here" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- first-contact fixes --------------------------------------------------------------------------


def test_an_output_name_without_a_known_format_is_refused_before_any_work(tmp_path, fasta, capsys):
    out = tmp_path / "out.xlsx"
    assert main(["predict", str(fasta), "--task", "promoter", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "out.xlsx" in err and "--format" in err and "*.csv" in err
    assert not out.exists()
    # --format says what to write, whatever the name
    assert main(["predict", str(fasta), "--task", "promoter", "-o", str(out), "--format", "csv", "--quiet"]) == 0
    assert out.read_text().startswith("id,length,probability")


def test_an_error_is_printed_on_its_own_line_after_the_progress_bar(tmp_path):
    path = tmp_path / "bad.fa"
    path.write_text(">ok\n" + "ACGT" * 20 + "\n>bad\nACGTXACGT\n")
    proc = subprocess.run([sys.executable, "-m", "service", "predict", str(path), "--task", "promoter",
                           "--models-dir", str(MODELS_DIR), "-o", str(tmp_path / "o.csv")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any(line.startswith("dnabert-serve: error [invalid_sequence] (record bad)") for line in lines), proc.stderr


def test_the_help_documents_only_options_that_exist():
    import re

    from service import cli

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for line in (cli.__doc__ or "").splitlines():
        m = re.match(r"\s*dnabert-serve (\w+) (.*)", line)
        if not m:
            continue
        known = {s for a in subparsers[m.group(1)]._actions for s in a.option_strings}
        for option in re.findall(r"--[a-z][a-z-]*", m.group(2)):
            assert option in known, (m.group(1), option)
    assert "workers-per-model" not in (cli.__doc__ or "")
