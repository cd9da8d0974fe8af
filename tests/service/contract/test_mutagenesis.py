"""In-silico mutagenesis, the pure part: the mutants and their order, the change matrix, importance
and mean change, the limits, the input length read from a card, the bedGraph, and the pictures
(valid PNG and SVG for 300 bp and 2,292 nt). No model runs here."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest

from service.contract.card import ModelCard
from service.contract.errors import SequenceTooLong
from service.contract.mutagenesis import (
    BASES,
    Explanation,
    Mutagenesis,
    TooManyMutants,
    check_limits,
    explanations_json,
    importance,
    importance_bedgraph,
    input_length,
    mean_change,
    mutant_count,
    raw_counts,
)
from service.contract.plots import OneRecordPerImage, explanation_image, require_one_record, row_width
from tests.service.robustness import MODELS_DIR
from tests.service.track_formats import parse_bedgraph

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _explained(sequence: str, labels: tuple[str, ...] = ("promoter",), seed: int = 0) -> Explanation:
    """An explanation with made-up scores (what the runtime builds from real ones)."""
    plan = Mutagenesis.of(sequence)
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.2, 0.8, len(labels))
    scores = np.clip(reference + rng.normal(0, 0.05, (len(plan), len(labels))), 0, 1)
    return Explanation("rec 1", sequence, labels, reference, plan.changes(reference, scores), plan.substitutions(),
                       [], plan.ambiguous_positions)


def test_mutants_come_in_a_fixed_order_and_leave_out_the_reference_base():
    plan = Mutagenesis.of("AC")
    assert plan.mutants() == ["CC", "GC", "TC", "AA", "AG", "AT"]
    assert plan.positions.tolist() == [0, 0, 0, 1, 1, 1]
    assert [BASES[b] for b in plan.bases] == ["C", "G", "T", "A", "G", "T"]
    assert plan.mutants(2, 4) == ["TC", "AA"]
    assert len(Mutagenesis.of("ACGT" * 75)) == 900


def test_an_N_position_is_substituted_by_all_four_bases():
    plan = Mutagenesis.of("ANT")
    assert len(plan) == 3 * 3 + 1 == mutant_count(3, 1)
    assert plan.mutants() == ["CNT", "GNT", "TNT", "AAT", "ACT", "AGT", "ATT", "ANA", "ANC", "ANG"]
    assert plan.ambiguous_positions == [1]
    assert plan.substitutions().tolist() == [3, 4, 3]


def test_changes_are_mutant_minus_reference_with_zero_at_the_reference_base():
    sequence = "ACGTNAC"
    plan = Mutagenesis.of(sequence)
    reference = np.array([0.5, 0.25])
    scores = np.random.default_rng(1).uniform(0, 1, (len(plan), 2))
    changes = plan.changes(reference, scores)
    assert changes.shape == (7, 4, 2)
    for j, (p, b) in enumerate(zip(plan.positions, plan.bases)):
        assert changes[p, b].tolist() == (scores[j] - reference).tolist()
    for p, base in enumerate(sequence):
        if base in BASES:
            assert (changes[p, BASES.index(base)] == 0).all()
    assert (changes[4] != 0).all()  # the N: four real substitutions, no zero
    imp = importance(changes)
    assert imp.tolist() == np.abs(changes).max(axis=1).tolist()
    mean = mean_change(changes, plan.substitutions())
    assert mean[0].tolist() == pytest.approx(changes[0, 1:].mean(axis=0).tolist())  # A: C, G, T
    assert mean[4].tolist() == pytest.approx(changes[4].mean(axis=0).tolist())  # N: all four
    with pytest.raises(ValueError, match="scores for"):
        plan.changes(reference, scores[:-1])


def test_raw_counts_match_normalisation():
    assert raw_counts("acg u\nNr") == (6, 2)
    assert mutant_count(6, 2) == 20
    assert mutant_count(4, 4) == 0  # no informative base: not scored, nothing to explain


def test_limits_name_the_record_the_limit_and_the_count():
    records = [SimpleNamespace(id="short", sequence="ACGT", line=1),
               SimpleNamespace(id="n", sequence="ACNT", line=3)]
    assert check_limits(records, 300, None) == [12, 13]
    assert check_limits(records, 4, 25) == [12, 13]
    with pytest.raises(TooManyMutants) as exc:
        check_limits(records, 300, 24)
    assert exc.value.http_status == 413 and "24" in exc.value.message and "25" in exc.value.message
    long = [SimpleNamespace(id="long one", sequence="A" * 301, line=7)]
    with pytest.raises(SequenceTooLong) as exc:
        check_limits(long, 300, None)
    err = exc.value
    assert err.http_status == 422 and err.record_id == "long one" and err.line == 7
    assert "'long one'" in err.message and "301" in err.message and "300 nt" in err.message


def test_the_input_length_comes_from_the_card():
    assert input_length(ModelCard.load(MODELS_DIR / "lncrna-localization" / "lncrna")) == 2292
    promoter = ModelCard.load(MODELS_DIR / "promoter" / "cnn_bilstm_max")
    assert promoter.training.data["name"] == "promoter_300bp"
    assert input_length(promoter) == 300
    promoter.training.data = None  # a card that says nothing: the promoter models' 300 bp windows
    assert input_length(promoter) == 300


def test_json_has_the_matrix_importance_and_mean_change():
    e = _explained("ACGTN")
    entry = json.loads(explanations_json([e], "promoter", "base"))["results"][0]
    assert entry["id"] == "rec 1" and entry["length"] == 5 and entry["mutants"] == 16
    assert len(entry["changes"]) == 5 and all(len(row) == 4 for row in entry["changes"])
    assert entry["changes"][0][0] == 0.0 and entry["changes"][3][3] == 0.0
    assert entry["importance"] == [max(abs(v) for v in row) for row in entry["changes"]]
    assert entry["ambiguous_positions"] == [4]
    labels = ("nucleus", "cytoplasm", "extracellular_vesicle")
    multi = json.loads(explanations_json([_explained("ACG", labels)], "lncrna-localization", "lncrna"))
    entry = multi["results"][0]
    assert multi["bases"] == ["A", "C", "G", "T"]
    assert set(entry["reference"]) == set(entry["changes"]) == set(entry["importance"]) == set(labels)
    assert len(entry["changes"]["cytoplasm"]) == 3


def test_bedgraph_is_one_track_per_record_and_label_zero_based():
    """Read back by the strict bedGraph reader the scan tests use (UCSC specification)."""
    e = _explained("ACGTNACGT")
    (track,) = parse_bedgraph(importance_bedgraph([e], "base"))
    assert track["name"] == "rec 1 ISM importance"
    rows = track["rows"]
    assert [(r[1], r[2]) for r in rows] == [(i, i + 1) for i in range(9)]
    assert {r[0] for r in rows} == {"rec_1"}
    assert [r[3] for r in rows] == pytest.approx(e.importance[:, 0].tolist(), rel=1e-5)
    labels = ("nucleus", "cytoplasm", "extracellular_vesicle")
    multi = _explained("ACG", labels)
    assert len(parse_bedgraph(importance_bedgraph([multi, multi], "lncrna"))) == 6
    (track,) = parse_bedgraph(importance_bedgraph([multi], "lncrna", "cytoplasm"))
    assert "cytoplasm" in track["name"]
    assert [r[3] for r in track["rows"]] == pytest.approx(multi.importance[:, 1].tolist(), rel=1e-5)
    blank = Explanation("blank", "NNNN", ("promoter",), None, None, np.zeros(4, dtype=np.int64), [])
    (track,) = parse_bedgraph(importance_bedgraph([blank], "base"))
    assert track["rows"] == []


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("length", [300, 2292])
def test_pictures_are_valid_png_and_svg(length):
    rng = np.random.default_rng(length)
    sequence = "".join(rng.choice(list("ACGT"), length))
    sequence = sequence[:40] + "N" + sequence[41:]
    labels = ("promoter",) if length == 300 else ("nucleus", "cytoplasm", "extracellular_vesicle")
    e = _explained(sequence, labels)
    png = explanation_image([e], "base", "png", None if length == 300 else "cytoplasm")
    width, height = _png_size(png)
    assert width == 1600 and height > 400
    svg = explanation_image([e], "base", "svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert row_width(length) in (100, 200)


def test_a_picture_shows_one_scored_record():
    require_one_record(1)
    with pytest.raises(OneRecordPerImage, match="this request has 2"):
        require_one_record(2)
    e = _explained("ACGT")
    with pytest.raises(OneRecordPerImage):
        explanation_image([e, e], "base", "png")
    blank = Explanation("blank", "NNNN", ("promoter",), None, None, np.zeros(4, dtype=np.int64), [])
    with pytest.raises(OneRecordPerImage, match="not scored") as exc:
        explanation_image([blank], "base", "svg")
    assert exc.value.record_id == "blank"
    with pytest.raises(ValueError, match="unknown label"):
        explanation_image([e], "base", "png", "nucleolus")
