"""What a new user and a hostile client ran into, through the HTTP API: records without an
informative base, protein written with IUPAC letters, the line of an invalid character,
non-ASCII letters, formula injection and broken rows in CSV/TSV, control characters in ids,
duplicate JSON keys and over-long FASTA ids.

All requests go to one application (started once for the module); each test checks its part.
"""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.contract.tasks import PROMOTER_VARIANTS
from tests.service.robustness import (
    FASTA,
    HAS_LNCRNA,
    LNCRNA,
    PROMOTER,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    run,
    serving,
    small_models_dir,
)

pytestmark = needs_models

_rng = random.Random(18)
DNA = "".join(_rng.choice("ACGT") for _ in range(200))
UNINFORMATIVE = [("all_n", "N" * 300), ("all_codes", "NNRYSWKMBDHVN" + "N" * 30), ("mostly", DNA[:40] + "N" * 100),
                 ("clean", DNA)]
PEPTIDE = "MKVHRSWYDKMNGTAVHDRSWYKMKVHRSWYDGAMKVDHKRSWM"  # every letter an IUPAC code
FORMULA_IDS = ["=cmd|' /C calc'!A0", "+SUM(1)", "@SUM(A1)", "-2+3", "=1+1;x", "plain"]
CONTROL_IDS = ["a\rb", "a\tb", "a\nb", "a\x01b", "a\x7fb", "evil\u202egpj.exe", "a\u2028b", "a\x85b"]
JSON = {"Content-Type": "application/json"}


def _json(records):
    return {"sequences": [{"id": rid, "sequence": seq} for rid, seq in records]}


def _metric(text: str, sample: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def _table(resp, sep: str) -> list[dict]:
    assert resp.status_code == 200, resp.text
    return list(csv.DictReader(io.StringIO(resp.text), delimiter=sep))


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    settings = make_settings(small_models_dir(tmp, *PROMOTER_VARIANTS, lncrna=True), max_records=50)

    async def body():
        out = {}
        async with serving(settings) as client:
            async def post(name, path=PROMOTER, **kwargs):
                out[name] = await client.post(path, **kwargs)

            out["metrics-before"] = await client.get("/metrics")
            body_fa = fasta(UNINFORMATIVE)
            await post("promoter", content=body_fa, headers=FASTA)
            await post("promoter-all", content=body_fa, headers=FASTA, params={"model": "all"})
            await post("promoter-all-csv", content=body_fa, headers=FASTA, params={"model": "all", "format": "csv"})
            await post("promoter-tsv", content=body_fa, headers=FASTA, params={"format": "tsv"})
            await post("promoter-json-body", json=_json(UNINFORMATIVE))
            if HAS_LNCRNA:
                await post("lncrna", LNCRNA, content=body_fa, headers=FASTA)
                await post("lncrna-csv", LNCRNA, content=body_fa, headers=FASTA, params={"format": "csv"})
            out["metrics-after"] = await client.get("/metrics")

            # 2. protein
            await post("protein", content=f">ok\nACGT\n>pep a peptide\n{PEPTIDE}\n".encode(), headers=FASTA)
            await post("protein-json", json=_json([("pep", PEPTIDE)]))
            await post("honest-iupac", content=b">iupac\nACGTRYKMSWBDHVN\n", headers=FASTA)
            # 5. the line of an invalid character
            await post("bad-char", content=b">good\nACGTACGT\n>bad_one with description\nACGTAC\n\nGTXACGT\n",
                       headers=FASTA)
            await post("bad-char-json", json=_json([("good", "ACGT"), ("bad_one", "ACGTAC\nGTXACGT")]))
            # 16. non-ASCII letters
            for i, raw in enumerate(["ACGß", "ACſT", "ACGTﬆ", "ßßß"]):
                await post(("non-ascii-json", i), json=_json([("u", raw)]))
                await post(("non-ascii-fasta", i), content=f">u\nACGT\n{raw}\n".encode(), headers=FASTA)
            # 18. formula injection and control characters
            formula = _json([(rid, DNA) for rid in FORMULA_IDS])
            await post("formula-json", json=formula)
            await post("formula-csv", json=formula, params={"format": "csv"})
            await post("formula-tsv", json=formula, params={"format": "tsv"})
            if HAS_LNCRNA:
                await post("formula-lncrna-csv", LNCRNA, json=formula, params={"format": "csv"})
            for i, rid in enumerate(CONTROL_IDS):
                await post(("control-json", i), json=_json([("ok", "ACGT"), (rid, "ACGT")]),
                           params={"format": "tsv"})
            await post("control-fasta", content=">ok\nACGT\n>evil\u202egpj.exe\nACGT\n".encode(), headers=FASTA)
            await post("control-fasta-c1", content=b">ok\nACGT\n\n>a\x01b\nACGT\n", headers=FASTA)
            # 19. duplicate JSON keys
            await post("dup-top", content=b'{"sequences": [{"id": "a", "sequence": "ACGT"}], '
                                          b'"sequences": [{"id": "b", "sequence": "ACGT"}]}', headers=JSON)
            await post("dup-nested", content=b'{"sequences": [{"id": "a", "sequence": "ACGT", '
                                             b'"sequence": "TTTT"}]}', headers=JSON)
            await post("dup-deep", content=b'{"sequences": [{"id": "a", "sequence": "ACGT", "x": {"k": 1, "k": 2}}]}',
                       headers=JSON)
            await post("lone-surrogate", content=b'{"sequences": [{"id": "a\\ud800", "sequence": "ACGT"}]}',
                       headers=JSON)
            await post("deep-nesting", content=b'{"sequences": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                       headers=JSON)
            # 20. FASTA id length
            await post("long-id", content=b">ok\nACGT\n>" + b"y" * 1_000_000 + b" desc\nACGT\n", headers=FASTA)
            await post("id-at-limit", content=b">" + b"x" * 1000 + b"\nACGT\n", headers=FASTA)
        return out

    return run(body())


# --------------------------------------------------------------------------------------------
# 1. records without an informative base


def test_records_without_informative_bases_get_no_score(answers):
    for name in ("promoter", "promoter-json-body"):
        resp = answers[name]
        assert resp.status_code == 200, resp.text
        by_id = {r["id"]: r for r in resp.json()["results"]}
        for rid in ("all_n", "all_codes"):
            r = by_id[rid]
            assert r["probability"] is None and r["label"] is None and r["variant_probabilities"] is None, r
            assert r["flags"] == ["ambiguous_bases", "no_informative_bases"], r
            assert r["ambiguous_bases"] == r["length"]
        mostly = by_id["mostly"]
        assert 0.0 <= mostly["probability"] <= 1.0 and mostly["label"] in ("promoter", "non_promoter")
        assert mostly["flags"] == ["ambiguous_bases", "mostly_ambiguous"]
        assert by_id["clean"]["flags"] == [] and by_id["clean"]["probability"] is not None


def test_the_all_ensemble_leaves_unscored_records_empty(answers):
    resp = answers["promoter-all"]
    assert resp.status_code == 200, resp.text
    by_id = {r["id"]: r for r in resp.json()["results"]}
    assert by_id["all_n"]["probability"] is None and by_id["all_n"]["variant_probabilities"] is None
    assert by_id["all_n"]["label"] is None
    assert set(by_id["clean"]["variant_probabilities"]) == set(PROMOTER_VARIANTS)
    assert set(by_id["mostly"]["variant_probabilities"]) == set(PROMOTER_VARIANTS)


def test_tables_have_empty_cells_for_unscored_records(answers):
    rows = {r["id"]: r for r in _table(answers["promoter-all-csv"], ",")}
    assert {f"p_{v}" for v in PROMOTER_VARIANTS} <= set(rows["all_n"])
    for rid in ("all_n", "all_codes"):
        row = rows[rid]
        assert row["probability"] == row["label"] == "" and all(row[f"p_{v}"] == "" for v in PROMOTER_VARIANTS)
        assert row["flags"] == "ambiguous_bases;no_informative_bases"
    assert float(rows["clean"]["probability"]) >= 0.0 and rows["mostly"]["flags"].endswith("mostly_ambiguous")
    tsv = {r["id"]: r for r in _table(answers["promoter-tsv"], "\t")}
    assert tsv["all_n"]["probability"] == tsv["all_n"]["label"] == ""
    assert float(tsv["mostly"]["probability"]) >= 0.0


@pytest.mark.skipif(not HAS_LNCRNA, reason="no lncRNA model")
def test_lncrna_unscored_records_have_null_scores_and_no_location(answers):
    resp = answers["lncrna"]
    assert resp.status_code == 200, resp.text
    by_id = {r["id"]: r for r in resp.json()["results"]}
    assert by_id["all_n"]["scores"] is None and by_id["all_n"]["locations"] == []
    assert "no_informative_bases" in by_id["all_n"]["flags"]
    assert set(by_id["clean"]["scores"]) == {"nucleus", "cytoplasm", "extracellular_vesicle"}
    assert "mostly_ambiguous" in by_id["mostly"]["flags"] and by_id["mostly"]["scores"] is not None
    rows = {r["id"]: r for r in _table(answers["lncrna-csv"], ",")}
    assert rows["all_n"]["nucleus"] == rows["all_n"]["cytoplasm"] == rows["all_n"]["extracellular_vesicle"] == ""
    assert rows["all_n"]["locations"] == ""


def test_uninformative_records_are_counted(answers):
    before, after = answers["metrics-before"].text, answers["metrics-after"].text
    name = "dnabert_uninformative_records_total"
    # promoter: 5 requests (JSON, all, all as CSV, TSV, JSON body), 2 unscored and 1 mostly ambiguous record each
    n_promoter = 5
    assert _metric(after, name, endpoint="promoter", reason="no_informative_bases") - \
        _metric(before, name, endpoint="promoter", reason="no_informative_bases") == 2 * n_promoter
    assert _metric(after, name, endpoint="promoter", reason="mostly_ambiguous") - \
        _metric(before, name, endpoint="promoter", reason="mostly_ambiguous") == n_promoter
    if HAS_LNCRNA:
        assert _metric(after, name, endpoint="lncrna-localization", reason="no_informative_bases") == 4


# --------------------------------------------------------------------------------------------
# 2. protein written with IUPAC letters


def test_protein_made_of_iupac_letters_is_refused(answers):
    err = assert_error(answers["protein"], 422, "invalid_sequence", record_id="pep", line=3)
    assert "protein" in err["message"]
    err = assert_error(answers["protein-json"], 422, "invalid_sequence", record_id="pep")
    assert "protein" in err["message"] and err.get("line") is None
    assert answers["honest-iupac"].status_code == 200, answers["honest-iupac"].text


# --------------------------------------------------------------------------------------------
# 5. the line of an invalid character


def test_invalid_character_names_its_own_line(answers):
    err = assert_error(answers["bad-char"], 422, "invalid_sequence", record_id="bad_one", line=6)
    assert "'X'" in err["message"] and "position 9" in err["message"]
    err = assert_error(answers["bad-char-json"], 422, "invalid_sequence", record_id="bad_one")
    assert err.get("line") is None and "position 9" in err["message"]


# --------------------------------------------------------------------------------------------
# 16. non-ASCII letters: 422 naming the character, never 500


@pytest.mark.parametrize(("i", "char", "position"), [(0, "ß", 4), (1, "ſ", 3), (2, "ﬆ", 5), (3, "ß", 1)])
def test_non_ascii_letters_are_invalid_not_a_server_error(answers, i, char, position):
    err = assert_error(answers["non-ascii-json", i], 422, "invalid_sequence", record_id="u")
    assert repr(char) in err["message"] and f"position {position}" in err["message"]
    err = assert_error(answers["non-ascii-fasta", i], 422, "invalid_sequence", record_id="u", line=3)
    assert repr(char) in err["message"] and f"position {position + 4}" in err["message"]  # after line 2's ACGT


# --------------------------------------------------------------------------------------------
# 18. CSV/TSV formula injection; control characters in ids


def test_table_cells_never_start_a_formula(answers):
    for name, sep in (("formula-csv", ","), ("formula-tsv", "\t"), ("formula-lncrna-csv", ",")):
        if name not in answers:
            continue
        ids = [r["id"] for r in _table(answers[name], sep)]
        assert ids == [("'" + rid if rid[0] in "=+-@" else rid) for rid in FORMULA_IDS], (name, ids)
    # JSON keeps the ids verbatim
    assert [r["id"] for r in answers["formula-json"].json()["results"]] == FORMULA_IDS


@pytest.mark.parametrize("i", range(len(CONTROL_IDS)))
def test_json_ids_with_control_characters_are_refused(answers, i):
    err = assert_error(answers["control-json", i], 422, "invalid_json")
    assert "sequences.1.id" in err["message"] and CONTROL_IDS[i] not in err["message"]
    assert answers["control-json", i].text.count("\n") == 0


def test_fasta_ids_with_control_characters_are_refused(answers):
    err = assert_error(answers["control-fasta"], 400, "invalid_fasta", line=3)
    assert "\u202e" not in err["message"] and "\\u202e" in err["message"]
    assert_error(answers["control-fasta-c1"], 400, "invalid_fasta", line=4)


# --------------------------------------------------------------------------------------------
# 19. duplicate JSON keys


def test_duplicate_json_keys_are_refused(answers):
    err = assert_error(answers["dup-top"], 422, "invalid_json")
    assert "'sequences'" in err["message"] and "more than once" in err["message"]
    err = assert_error(answers["dup-nested"], 422, "invalid_json")
    assert "'sequence'" in err["message"]
    err = assert_error(answers["dup-deep"], 422, "invalid_json")
    assert "'k'" in err["message"]


def test_unencodable_and_deeply_nested_json_is_refused(answers):
    assert_error(answers["lone-surrogate"], 422, "invalid_json")
    assert_error(answers["deep-nesting"], 422, "invalid_json")


# --------------------------------------------------------------------------------------------
# 20. FASTA ids: at most 1,000 characters, not echoed whole


def test_over_long_fasta_id_is_refused_without_echo(answers):
    resp = answers["long-id"]
    err = assert_error(resp, 400, "invalid_fasta", line=3)
    assert "1000 characters" in err["message"] and len(resp.content) < 1000
    assert answers["id-at-limit"].status_code == 200
    assert json.loads(answers["id-at-limit"].text)["results"][0]["id"] == "x" * 1000
