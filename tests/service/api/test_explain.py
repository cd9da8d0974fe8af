"""``POST /explain/promoter`` and ``POST /explain/lncrna-localization`` over HTTP.

The point: every entry of a change matrix is ``/predict`` on the mutant minus ``/predict`` on the
reference (to 1e-6), for the default promoter model, for ``all`` and for each lncRNA label; the
importance is the largest |change|; the reference base's entry is 0. And the limits (413 over
``max_mutants``, 422 over the model's input length), the formats (bedGraph, PNG, SVG) and the
errors around them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from service.api.explain import LncRnaExplainResponse, PromoterExplainResponse
from service.contract.fasta import FastaRecord
from service.runtime.explain import explain
from tests.service.robustness import (
    FASTA,
    LNCRNA,
    PROMOTER,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    run,
    serving,
)
from tests.service.track_formats import parse_bedgraph

pytestmark = needs_models

BASES = "ACGT"
LABELS = ("nucleus", "cytoplasm", "extracellular_vesicle")
# A TATA-box-like stretch with an N in it (all four bases are substituted at the N).
SEQ = "TTGACAGCTAGCTCAGTCCTAGGTATAATGCNAGC"


def single_mutants(seq: str) -> list[tuple[int, int, str]]:
    """(position, base column, mutant) for every single-base substitution, written out plainly."""
    return [(p, b, seq[:p] + BASES[b] + seq[p + 1:]) for p in range(len(seq)) for b in range(4) if BASES[b] != seq[p]]


async def predicted(client, path: str, sequences: dict[str, str], **params) -> dict[str, dict]:
    resp = await client.post(path, params=params, json={"sequences": [{"id": k, "sequence": v}
                                                                     for k, v in sequences.items()]})
    assert resp.status_code == 200, resp.text
    return {r["id"]: r for r in resp.json()["results"]}


async def explained(client, path: str, records: list[tuple[str, str]], **params) -> dict:
    resp = await client.post(path, params=params, content=fasta(records), headers=FASTA)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def check_matrix(seq: str, changes: np.ndarray, reference: float, predictions: dict[str, float]) -> None:
    """Every entry = predict(mutant) - predict(reference) (``m<j>`` in mutant order, ``ref``); 0 at
    the reference base."""
    assert changes.shape == (len(seq), 4)
    assert reference == pytest.approx(predictions["ref"], abs=1e-6)
    for j, (p, b, _) in enumerate(single_mutants(seq)):
        assert changes[p, b] == pytest.approx(predictions[f"m{j}"] - predictions["ref"], abs=1e-6), (p, b)
    for p, base in enumerate(seq):
        if base in BASES:
            assert changes[p, BASES.index(base)] == 0.0


def test_every_promoter_change_is_predict_of_the_mutant_minus_predict_of_the_reference():
    async def go():
        async with serving(make_settings()) as client:
            mutants = {f"m{j}": m for j, (_, _, m) in enumerate(single_mutants(SEQ))}
            for model in (None, "all"):
                params = {} if model is None else {"model": model}
                body = await explained(client, "/explain/promoter", [("tata", SEQ)], **params)
                assert body["model"] == ("base" if model is None else "all") and body["bases"] == list(BASES)
                PromoterExplainResponse.model_validate(body)  # the documented response schema
                (entry,) = body["results"]
                assert entry["sequence"] == SEQ and entry["mutants"] == 3 * len(SEQ) + 1 == len(mutants)
                assert entry["ambiguous_positions"] == [SEQ.index("N")] and "ambiguous_bases" in entry["flags"]
                preds = await predicted(client, PROMOTER, {**mutants, "ref": SEQ}, **params)
                probs = {k: v["probability"] for k, v in preds.items()}
                changes = np.array(entry["changes"])
                check_matrix(SEQ, changes, entry["reference"], probs)
                assert entry["importance"] == np.abs(changes).max(axis=1).tolist()
                subs = np.where([b in BASES for b in SEQ], 3, 4)
                assert np.allclose(entry["mean_change"], changes.sum(axis=1) / subs, atol=1e-12)
                assert (changes[SEQ.index("N")] != 0).all()

    run(go())


def test_every_lncrna_change_is_predict_of_the_mutant_minus_predict_of_the_reference_per_label():
    async def go():
        async with serving(make_settings()) as client:
            seq = SEQ.replace("N", "U").lower()  # RNA, lower case: explained on the normalised sequence
            norm = seq.upper().replace("U", "T")
            body = await explained(client, "/explain/lncrna-localization", [("lnc", seq)])
            (entry,) = body["results"]
            assert body["model"] == "lncrna" and entry["sequence"] == norm and "rna_input" in entry["flags"]
            LncRnaExplainResponse.model_validate(body)
            mutants = {f"m{j}": m for j, (_, _, m) in enumerate(single_mutants(norm))}
            preds = await predicted(client, LNCRNA, {**mutants, "ref": seq})
            for label in LABELS:
                scores = {k: v["scores"][label] for k, v in preds.items()}
                changes = np.array(entry["changes"][label])
                check_matrix(norm, changes, entry["reference"][label], scores)
                assert entry["importance"][label] == np.abs(changes).max(axis=1).tolist()

    run(go())


def test_several_records_in_chunks_that_span_records():
    """Chunks of 7 mutants cut across the records; each record's matrix is the same as alone."""
    async def go():
        records = [("a", SEQ[:9]), ("b", SEQ[9:20]), ("c", "NNNN"), ("d", SEQ[20:])]
        async with serving(make_settings()) as client:
            service = client.app.state.service
            together = await explain(service, "promoter", [FastaRecord(i, i, s, 0) for i, s in records], chunk=7)
            blank = together.explanations[2]
            assert blank.reference is None and blank.changes is None and "no_informative_bases" in blank.flags
            body = await explained(client, "/explain/promoter", records)
            assert [r["id"] for r in body["results"]] == ["a", "b", "c", "d"]
            assert body["results"][2]["reference"] is None and body["results"][2]["mutants"] == 0
            for e, (rid, seq) in zip(together.explanations, records):
                if e.changes is None:
                    continue
                alone = (await explained(client, "/explain/promoter", [(rid, seq)]))["results"][0]
                assert np.allclose(e.changes[:, :, 0], alone["changes"], atol=1e-6)

    run(go())


def test_limits_413_over_max_mutants_and_422_over_the_input_length():
    async def go():
        async with serving(make_settings(max_mutants=100)) as client:
            resp = await client.post("/explain/promoter", content=fasta([("a", "ACGT" * 5), ("b", "ACGT" * 5)]),
                                     headers=FASTA)
            err = assert_error(resp, 413, "too_many_mutants")
            assert "100" in err["message"] and "120" in err["message"]
            assert (await client.post("/explain/promoter", content=fasta([("a", "ACGT" * 8)]),
                                      headers=FASTA)).status_code == 200  # 96 mutants
            resp = await client.post("/explain/promoter", content=fasta([("ok", "A" * 10), ("too_long", "A" * 301)]),
                                     headers=FASTA)
            err = assert_error(resp, 422, "sequence_too_long", record_id="too_long", line=3)
            assert "300 nt" in err["message"] and "301" in err["message"]
            resp = await client.post("/explain/lncrna-localization", content=fasta([("lnc", "ACGT" * 574)]),
                                     headers=FASTA)  # 2,296 nt
            err = assert_error(resp, 422, "sequence_too_long", record_id="lnc")
            assert "2292 nt" in err["message"]
            resp = await client.post("/explain/promoter", content=fasta([("bad", "ACGTXACGT")]), headers=FASTA)
            assert_error(resp, 422, "invalid_sequence", record_id="bad", line=2)
            metrics = (await client.get("/metrics")).text
            assert 'dnabert_requests_total{endpoint="explain/promoter",model="base",status="413"} 1.0' in metrics

    run(go())


def test_formats_bedgraph_png_svg_and_their_errors():
    async def go():
        async with serving(make_settings()) as client:
            record = fasta([("tata", SEQ)])
            resp = await client.post("/explain/promoter?format=bedgraph", content=record, headers=FASTA)
            assert resp.status_code == 200 and resp.headers["content-type"] == "text/x-bedgraph; charset=utf-8"
            (track,) = parse_bedgraph(resp.text)
            assert [r[:3] for r in track["rows"]] == [("tata", i, i + 1) for i in range(len(SEQ))]
            seq300 = (SEQ.replace("N", "A") * 9)[:300]
            resp = await client.post("/explain/promoter?format=png", content=fasta([("p300", seq300)]), headers=FASTA)
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
            assert resp.content[:8] == b"\x89PNG\r\n\x1a\n"
            resp = await client.post("/explain/lncrna-localization?label=cytoplasm", content=record,
                                     headers={**FASTA, "Accept": "image/svg+xml"})
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/svg+xml")
            assert ET.fromstring(resp.content).tag.endswith("svg")
            resp = await client.post("/explain/lncrna-localization?format=bedgraph&label=nucleus", content=record,
                                     headers=FASTA)
            (track,) = parse_bedgraph(resp.text)
            assert "nucleus" in track["name"] and len(track["rows"]) == len(SEQ)
            two = fasta([("a", SEQ), ("b", SEQ)])
            err = assert_error(await client.post("/explain/promoter?format=svg", content=two, headers=FASTA),
                               422, "one_record_per_image")
            assert "one record" in err["message"]
            assert_error(await client.post("/explain/promoter?format=bed", content=record, headers=FASTA), 406)
            assert_error(await client.post("/explain/promoter?label=nucleus", content=record, headers=FASTA),
                         422, "invalid_parameter")
            assert_error(await client.post("/explain/lncrna-localization?label=nucleolus", content=record,
                                           headers=FASTA), 422)
            assert_error(await client.post("/explain/promoter?model=nope", content=record, headers=FASTA), 404)
            paths = (await client.get("/openapi.json")).json()["paths"]
            assert {"/explain/promoter", "/explain/lncrna-localization"} <= set(paths)

    run(go())


def test_the_api_key_guards_the_explain_routes():
    async def go():
        async with serving(make_settings(api_key="secret")) as client:
            resp = await client.post("/explain/promoter", content=fasta([("a", "ACGT")]), headers=FASTA)
            assert_error(resp, 401, "unauthorized")
            resp = await client.post("/explain/promoter", content=fasta([("a", "ACGT")]),
                                     headers={**FASTA, "Authorization": "Bearer secret"})
            assert resp.status_code == 200

    run(go())
