"""The HTTP API end to end: httpx against the ASGI app, serving real exported model folders.

Every test builds its own application (model loading and warm-up take well under a second with
the small models) and runs it with ``asyncio.run``; each test groups many requests to one app.
Scores are never hard-coded: they are compared across input forms, output formats and models,
and with the service's offline path (:func:`service.cli.predict_file`).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import random
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.cli import predict_file
from service.contract.card import CARD_FILE, ModelCard
from service.contract.tasks import PROMOTER_VARIANTS
from service.runtime.inference import InferenceService, discover
from service.settings import Settings

from ..robustness import serving

TEST_TIMEOUT = 120.0
PROMOTER = "/predict/promoter"
LNCRNA = "/predict/lncrna-localization"
LNCRNA_LABELS = ("nucleus", "cytoplasm", "extracellular_vesicle")
LNCRNA_MAX_NT = 2292  # iLoc-lncRNA-BERT keeps the last 2,292 nt
ERROR_FIELDS = {"code", "message", "record_id", "line", "request_id"}
AMBIGUOUS = set("NRYSWKMBDHV")
FASTA = {"Content-Type": "text/plain"}
REPO = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------
# helpers


def run(coro):
    """Run one test coroutine with a hard ceiling, so a bug fails the test instead of hanging."""

    async def guarded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT)

    return asyncio.run(guarded())


def make_settings(models_dir: Path, **overrides) -> Settings:
    values = dict(models_dir=models_dir, default_promoter_model="cnn_bilstm_avg", device="cpu",
                  tokenizer_threads=1, intra_op_threads=1)
    values.update(overrides)
    return Settings(**values)


def need_lncrna(models_dir: Path) -> None:
    if not (models_dir / "lncrna-localization").is_dir():
        pytest.skip(f"no lncrna-localization model under {models_dir}")


class Rec:
    """A test record: id, header description and raw sequence (case, U and IUPAC kept)."""

    def __init__(self, rid: str, seq: str, desc: str = ""):
        self.id, self.seq, self.desc = rid, seq, desc

    @property
    def length(self) -> int:
        return len("".join(self.seq.split()))

    @property
    def ambiguous(self) -> int:
        return sum(c in AMBIGUOUS for c in self.seq.upper())

    @property
    def rna(self) -> bool:
        return "U" in self.seq.upper()


def dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def to_fasta(records, width: int = 60, newline: str = "\n") -> bytes:
    lines = []
    for r in records:
        lines.append(">" + r.id + (" " + r.desc if r.desc else ""))
        lines.extend(r.seq[i:i + width] for i in range(0, len(r.seq), width))
    return (newline.join(lines) + newline).encode()


def to_json(records, split: int = 0) -> dict:
    """JSON body; ``split`` > 0 puts a line break every ``split`` bases (removed by normalisation)."""
    def text(s: str) -> str:
        if not split:
            return s
        return "\n ".join(s[i:i + split] for i in range(0, len(s), split))
    return {"sequences": [{"id": r.id, "sequence": text(r.seq)} for r in records]}


_rng = random.Random(20240611)
PROMOTER_RECORDS = [
    Rec("plain", dna(_rng, 251), "a plain record"),
    Rec("lower", dna(_rng, 60).lower() + "nn" + dna(_rng, 70).lower()),
    Rec("rna", dna(_rng, 180).replace("T", "U")),
    Rec("iupac", dna(_rng, 90) + "RYKMSWBDHVN" + dna(_rng, 40), "IUPAC codes"),
    Rec("short", "ACGTTGCA"),
    Rec("long", dna(_rng, 20_000)),  # far more than 512 tokens
]
LNCRNA_RECORDS = [
    Rec("short", dna(_rng, 300)),
    Rec("at_limit_plus_one", dna(_rng, LNCRNA_MAX_NT + 1)),
    Rec("rna_long", dna(_rng, 5000).replace("T", "U")),
    Rec("ambiguous", dna(_rng, 200) + "NNNNRY" + dna(_rng, 100)),
]


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], code: str | tuple[str, ...] | None = None,
                 *, record_id: str | None = None, line: int | None = None) -> dict:
    """The single error shape, without stack traces or server paths; returns ``error``."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "request_id"} <= set(err) <= ERROR_FIELDS, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] and err["request_id"] == resp.headers["x-request-id"]
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert err["code"] in codes, err
    if record_id is not None:
        assert err.get("record_id") == record_id, err
        assert record_id in err["message"], err
    if line is not None:
        assert err.get("line") == line, err
    text = resp.text
    assert "Traceback" not in text and 'File "' not in text, text
    assert not re.search(r"\.py\b", text), text
    assert str(REPO) not in text and "/site-packages/" not in text, text
    return err


def results_of(resp: httpx.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def table_rows(resp: httpx.Response, sep: str) -> tuple[list[str], list[dict]]:
    assert resp.status_code == 200, resp.text
    reader = csv.reader(io.StringIO(resp.text), delimiter=sep)
    rows = list(reader)
    header, body = rows[0], rows[1:]
    return header, [dict(zip(header, row, strict=True)) for row in body]


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def all_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def offline(models_dir: Path, tmp_path: Path, records, task: str, model: str | None = None):
    """The service's offline path (same runtime, same batcher, no HTTP): ``dnabert-serve predict``."""
    path = tmp_path / f"offline-{task}-{model}.fa"
    path.write_bytes(to_fasta(records))
    return predict_file(path, task, model, make_settings(models_dir), progress=False)


# ------------------------------------------------------------------------------------------
# 1. input forms


def test_every_input_form_gives_identical_results(models_dir):
    fasta = to_fasta(PROMOTER_RECORDS)
    gz = gzip.compress(fasta)
    forms = {
        "multipart": dict(files={"file": ("records.fa", fasta, "text/plain")}),
        "multipart-gzip": dict(files={"file": ("records.fa.gz", gz, "application/gzip")}),
        "multipart-gzip-no-suffix": dict(files={"file": ("upload", gz, "application/octet-stream")}),
        "text/plain": dict(content=fasta, headers={"Content-Type": "text/plain"}),
        "text/plain-charset-crlf": dict(content=to_fasta(PROMOTER_RECORDS, width=70, newline="\r\n"),
                                        headers={"Content-Type": "text/plain; charset=utf-8"}),
        "text/x-fasta": dict(content=fasta, headers={"Content-Type": "text/x-fasta"}),
        "text/plain+gzip": dict(content=gz, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}),
        "text/x-fasta+gzip": dict(content=gz, headers={"Content-Type": "text/x-fasta", "Content-Encoding": "gzip"}),
        "json": dict(json=to_json(PROMOTER_RECORDS)),
        "json-with-whitespace": dict(json=to_json(PROMOTER_RECORDS, split=33)),
    }
    lnc_forms = {k: forms[k] for k in ("multipart", "multipart-gzip", "text/plain", "text/x-fasta+gzip", "json")}
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def body():
        out: dict[tuple[str, str], list[dict]] = {}
        async with serving(make_settings(models_dir)) as client:
            for name, kwargs in forms.items():
                out[PROMOTER, name] = results_of(await client.post(PROMOTER, **kwargs))
            if has_lncrna:
                for name, kwargs in lnc_forms.items():
                    out[LNCRNA, name] = results_of(await client.post(LNCRNA, **kwargs))
        return out

    out = run(body())
    ids = [r.id for r in PROMOTER_RECORDS]
    reference = out[PROMOTER, "text/plain"]
    assert [r["id"] for r in reference] == ids
    for name in forms:
        assert out[PROMOTER, name] == reference, name  # ids, order, probabilities: all exactly equal
    if has_lncrna:
        lnc_reference = out[LNCRNA, "text/plain"]
        assert [r["id"] for r in lnc_reference] == ids
        for name in lnc_forms:
            assert out[LNCRNA, name] == lnc_reference, name


# ------------------------------------------------------------------------------------------
# 2. promoter


def test_promoter_results_per_record_and_offline_parity(models_dir, tmp_path):
    settings = make_settings(models_dir)

    async def body():
        async with serving(settings) as client:
            resp = await client.post(PROMOTER, content=to_fasta(PROMOTER_RECORDS), headers=FASTA)
        expected = await offline(models_dir, tmp_path, PROMOTER_RECORDS, "promoter")
        return resp, expected

    resp, expected = run(body())
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert data["task"] == "promoter"
    assert data["model"] == "cnn_bilstm_avg"
    # unset DNABERT_PROMOTER_THRESHOLD: the threshold the model's card adopted on dev, else 0.5
    threshold = ModelCard.load(models_dir / "promoter" / "cnn_bilstm_avg").threshold_in_force()
    assert settings.promoter_threshold is None and data["threshold"] == threshold
    assert data["count"] == len(PROMOTER_RECORDS) == len(data["results"])
    for rec, res in zip(PROMOTER_RECORDS, data["results"], strict=True):
        assert res["id"] == rec.id
        assert res["length"] == rec.length
        p = res["probability"]
        assert isinstance(p, float) and 0.0 < p < 1.0
        assert res["label"] == ("promoter" if p >= threshold else "non_promoter")
        assert res["model"] == "cnn_bilstm_avg"
        assert res["variant_probabilities"] is None
        assert res["ambiguous_bases"] == rec.ambiguous
        assert res["truncated"] is (rec.id == "long")
        want = {"ambiguous_bases"} if rec.ambiguous else set()
        want |= {"rna_input"} if rec.rna else set()
        want |= {"truncated"} if rec.id == "long" else set()
        assert sorted(res["flags"]) == sorted(want), (rec.id, res["flags"])
    # spot checks of the fixture itself, so that the flags above are really exercised
    by_id = {r["id"]: r for r in data["results"]}
    assert by_id["lower"]["ambiguous_bases"] == 2 and by_id["iupac"]["ambiguous_bases"] == 11
    assert "rna_input" in by_id["rna"]["flags"] and by_id["long"]["length"] == 20_000

    # the offline path (same runtime and batcher, no HTTP) gives the same answers
    off = expected.model_dump(mode="json")
    assert off["model"] == data["model"] and off["count"] == data["count"]
    for a, b in zip(data["results"], off["results"], strict=True):
        assert {k: v for k, v in a.items() if k != "probability"} == {k: v for k, v in b.items() if k != "probability"}
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-7)


def test_promoter_threshold_query_sets_labels(models_dir):
    records = PROMOTER_RECORDS[:5]
    fasta = to_fasta(records)

    async def body():
        async with serving(make_settings(models_dir)) as client:
            base = (await client.post(PROMOTER, content=fasta, headers=FASTA)).json()
            probs = [r["probability"] for r in base["results"]]
            middle = (min(probs) + max(probs)) / 2  # records on both sides (p >= t is promoter)
            out = {}
            for t in (0.0, 1.0, middle, 0.5):
                out[t] = await client.post(PROMOTER, params={"threshold": t}, content=fasta, headers=FASTA)
            return base, middle, out

    base, middle, out = run(body())
    base_probs = [r["probability"] for r in base["results"]]
    for t, resp in out.items():
        data = resp.json()
        assert resp.status_code == 200, resp.text
        assert data["threshold"] == t
        assert [r["probability"] for r in data["results"]] == base_probs  # labels only, not scores
        for r in data["results"]:
            assert r["label"] == ("promoter" if r["probability"] >= t else "non_promoter")
    assert {r["label"] for r in out[0.0].json()["results"]} == {"promoter"}
    if max(base_probs) < 1.0:
        assert {r["label"] for r in out[1.0].json()["results"]} == {"non_promoter"}
    if min(base_probs) < middle < max(base_probs):
        assert {r["label"] for r in out[middle].json()["results"]} == {"promoter", "non_promoter"}


def test_promoter_model_selection_and_all(models_dir):
    records = PROMOTER_RECORDS[:5]
    fasta = to_fasta(records)

    async def body():
        async with serving(make_settings(models_dir)) as client:
            listed = (await client.get("/models")).json()
            names = [m["name"] for m in listed["models"] if m["task"] == "promoter"]
            default = await client.post(PROMOTER, content=fasta, headers=FASTA)
            single = {n: await client.post(PROMOTER, params={"model": n}, content=fasta, headers=FASTA)
                      for n in names}
            every = await client.post(PROMOTER, params={"model": "all"}, content=fasta, headers=FASTA)
        other = next((n for n in names if n != "cnn_bilstm_avg"), None)
        other_default = None
        if other is not None:  # the default comes from the settings
            async with serving(make_settings(models_dir, default_promoter_model=other)) as client:
                other_default = await client.post(PROMOTER, content=fasta, headers=FASTA)
        return names, default, single, every, other, other_default

    names, default, single, every, other, other_default = run(body())
    assert "cnn_bilstm_avg" in names
    for name, resp in single.items():
        data = resp.json()
        assert resp.status_code == 200, resp.text
        assert data["model"] == name and {r["model"] for r in data["results"]} == {name}
        assert [r["id"] for r in data["results"]] == [r.id for r in records]
    assert default.json() == single["cnn_bilstm_avg"].json()
    if other is not None:
        assert other_default.json()["model"] == other
        assert other_default.json() == single[other].json()

    assert every.status_code == 200, every.text
    data = every.json()
    variants = [v for v in PROMOTER_VARIANTS if v in names]
    assert data["model"] == "all"
    assert [r["id"] for r in data["results"]] == [r.id for r in records]
    for i, res in enumerate(data["results"]):
        vp = res["variant_probabilities"]
        assert sorted(vp) == sorted(variants)
        assert res["model"] == "all"
        assert res["probability"] == pytest.approx(sum(vp.values()) / len(vp), abs=1e-12)
        assert res["label"] == ("promoter" if res["probability"] >= data["threshold"] else "non_promoter")
        for v in variants:
            assert vp[v] == pytest.approx(single[v].json()["results"][i]["probability"], abs=1e-7)


# ------------------------------------------------------------------------------------------
# 3. lncRNA


def test_lncrna_scores_locations_and_truncation(models_dir, tmp_path):
    need_lncrna(models_dir)
    fasta = to_fasta(LNCRNA_RECORDS)

    async def body():
        async with serving(make_settings(models_dir)) as client:
            default = await client.post(LNCRNA, content=fasta, headers=FASTA)
            ev = [r["scores"]["extracellular_vesicle"] for r in default.json()["results"]]
            middle = (min(ev) + max(ev)) / 2
            params = {"threshold_nucleus": 0.0, "threshold_cytoplasm": 1.0,
                      "threshold_extracellular_vesicle": middle}
            custom = await client.post(LNCRNA, params=params, content=fasta, headers=FASTA)
            one = await client.post(LNCRNA, params={"threshold_cytoplasm": 0.25}, content=fasta, headers=FASTA)
            named = await client.post(LNCRNA, params={"model": default.json()["model"]}, content=fasta,
                                      headers=FASTA)
        expected = await offline(models_dir, tmp_path, LNCRNA_RECORDS, "lncrna-localization")
        return default, custom, one, named, params, expected

    default, custom, one, named, params, expected = run(body())
    data = default.json()
    assert default.status_code == 200, default.text
    assert data["task"] == "lncrna-localization"
    assert data["thresholds"] == {label: 0.5 for label in LNCRNA_LABELS}
    assert data["count"] == len(LNCRNA_RECORDS)
    for rec, res in zip(LNCRNA_RECORDS, data["results"], strict=True):
        assert res["id"] == rec.id and res["length"] == rec.length
        assert res["model"] == data["model"]
        assert set(res["scores"]) == set(LNCRNA_LABELS)
        assert all(0.0 < s < 1.0 for s in res["scores"].values())
        assert res["locations"] == [lab for lab in LNCRNA_LABELS if res["scores"][lab] >= 0.5]
        assert res["truncated"] is (rec.length > LNCRNA_MAX_NT)
        assert ("truncated" in res["flags"]) is res["truncated"]
        assert ("rna_input" in res["flags"]) is rec.rna
        assert res["ambiguous_bases"] == rec.ambiguous
        assert ("ambiguous_bases" in res["flags"]) is bool(rec.ambiguous)
    by_id = {r["id"]: r for r in data["results"]}
    assert by_id["short"]["truncated"] is False and by_id["at_limit_plus_one"]["truncated"] is True

    for resp, thresholds in ((custom, {"nucleus": params["threshold_nucleus"],
                                       "cytoplasm": params["threshold_cytoplasm"],
                                       "extracellular_vesicle": params["threshold_extracellular_vesicle"]}),
                             (one, {"nucleus": 0.5, "cytoplasm": 0.25, "extracellular_vesicle": 0.5})):
        got = resp.json()
        assert resp.status_code == 200, resp.text
        assert got["thresholds"] == thresholds
        for res, ref in zip(got["results"], data["results"], strict=True):
            assert res["scores"] == ref["scores"]
            assert res["locations"] == [lab for lab in LNCRNA_LABELS if res["scores"][lab] >= thresholds[lab]]
    custom_results = custom.json()["results"]
    assert all("nucleus" in r["locations"] for r in custom_results)
    assert not any("cytoplasm" in r["locations"] for r in custom_results)
    ev_in = ["extracellular_vesicle" in r["locations"] for r in custom_results]
    assert any(ev_in)
    if params["threshold_extracellular_vesicle"] > min(r["scores"]["extracellular_vesicle"] for r in custom_results):
        assert not all(ev_in)
    assert named.json() == data

    off = expected.model_dump(mode="json")
    for a, b in zip(data["results"], off["results"], strict=True):
        assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
        for lab in LNCRNA_LABELS:
            assert a["scores"][lab] == pytest.approx(b["scores"][lab], abs=1e-7)


# ------------------------------------------------------------------------------------------
# 4. output formats


def test_output_formats(models_dir):
    records = PROMOTER_RECORDS[:5]
    fasta = to_fasta(records)
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            async def post(path, params=None, accept=None):
                headers = dict(FASTA)
                if accept:
                    headers["Accept"] = accept
                return await client.post(path, params=params, content=fasta, headers=headers)

            out["json"] = await post(PROMOTER)
            out["json-explicit"] = await post(PROMOTER, {"format": "json"}, accept="text/csv")
            out["csv"] = await post(PROMOTER, {"format": "csv"})
            out["CSV"] = await post(PROMOTER, {"format": "CSV"})
            out["tsv"] = await post(PROMOTER, {"format": "tsv"})
            out["accept-csv"] = await post(PROMOTER, accept="text/csv")
            out["accept-tsv"] = await post(PROMOTER, accept="text/tab-separated-values")
            out["accept-other"] = await post(PROMOTER, accept="application/xml, */*;q=0.1")
            out["all-json"] = await post(PROMOTER, {"model": "all"})
            out["all-csv"] = await post(PROMOTER, {"model": "all", "format": "csv"})
            out["bad"] = await post(PROMOTER, {"format": "xml"})
            out["bad-lnc"] = await post(LNCRNA, {"format": "parquet"})
            if has_lncrna:
                out["lnc-json"] = await post(LNCRNA)
                out["lnc-tsv"] = await post(LNCRNA, {"format": "tsv"})
                out["lnc-accept-csv"] = await post(LNCRNA, accept="text/csv")
        return out

    out = run(body())
    expected = results_of(out["json"])
    assert out["json"].headers["content-type"].startswith("application/json")
    assert results_of(out["json-explicit"]) == expected
    assert results_of(out["accept-other"]) == expected
    header = ["id", "length", "probability", "label", "model", "truncated", "ambiguous_bases", "flags"]
    for name, sep, media in (("csv", ",", "text/csv"), ("CSV", ",", "text/csv"),
                             ("tsv", "\t", "text/tab-separated-values"),
                             ("accept-csv", ",", "text/csv"), ("accept-tsv", "\t", "text/tab-separated-values")):
        resp = out[name]
        assert resp.headers["content-type"].startswith(media), (name, resp.headers)
        got_header, rows = table_rows(resp, sep)
        assert got_header == header, name
        assert len(rows) == len(expected) == len(resp.text.strip().splitlines()) - 1
        for row, res in zip(rows, expected, strict=True):
            assert row["id"] == res["id"]
            assert int(row["length"]) == res["length"]
            assert float(row["probability"]) == res["probability"]  # written with repr: exact
            assert row["label"] == res["label"] and row["model"] == res["model"]
            assert row["truncated"] == str(res["truncated"]).lower()
            assert int(row["ambiguous_bases"]) == res["ambiguous_bases"]
            assert (row["flags"].split(";") if row["flags"] else []) == res["flags"]

    all_json = results_of(out["all-json"])
    got_header, rows = table_rows(out["all-csv"], ",")
    variants = sorted(all_json[0]["variant_probabilities"])
    assert got_header == header[:5] + [f"p_{v}" for v in variants] + header[5:]
    for row, res in zip(rows, all_json, strict=True):
        assert float(row["probability"]) == res["probability"]
        for v in variants:
            assert float(row[f"p_{v}"]) == res["variant_probabilities"][v]

    assert_error(out["bad"], 406, "unsupported_format")
    assert_error(out["bad-lnc"], 406, "unsupported_format")

    if has_lncrna:
        lnc = results_of(out["lnc-json"])
        lnc_header = ["id", "length", *LNCRNA_LABELS, "locations", "truncated", "ambiguous_bases", "flags", "model"]
        for name, sep in (("lnc-tsv", "\t"), ("lnc-accept-csv", ",")):
            got_header, rows = table_rows(out[name], sep)
            assert got_header == lnc_header
            assert len(rows) == len(lnc)
            for row, res in zip(rows, lnc, strict=True):
                assert row["id"] == res["id"] and int(row["length"]) == res["length"]
                for lab in LNCRNA_LABELS:
                    assert float(row[lab]) == res["scores"][lab]
                assert (row["locations"].split(";") if row["locations"] else []) == res["locations"]
                assert row["truncated"] == str(res["truncated"]).lower() and row["model"] == res["model"]


# ------------------------------------------------------------------------------------------
# 5. errors


def test_malformed_and_empty_input(models_dir):
    cases = {
        "before-header": (b"ACGT\n>a\nACGT\n", 400, "invalid_fasta", None, 1),
        "before-header-line-3": (b"\n;comment\nACGT\n>a\nACGT\n", 400, "invalid_fasta", None, 3),
        "no-sequence": (b">a first\n>b\nACGT\n", 400, "invalid_fasta", "a", 1),
        "no-sequence-last": (b">a\nACGT\n\n>b\n", 400, "invalid_fasta", "b", 4),
        "no-identifier": (b">\nACGT\n", 400, "invalid_fasta", None, 1),
        "duplicate-id": (b">a\nACGT\n>a\nACGA\n", 400, "invalid_fasta", "a", 3),
        "empty": (b"", 400, "empty_input", None, None),
        "blank": (b"  \n\n\t\n", 400, "empty_input", None, None),
        "comments-only": (b";just a comment\n", 400, "empty_input", None, None),
        "corrupt-gzip": (b"\x1f\x8b\x08\x00garbage", 400, "invalid_fasta", None, None),
        "nul-byte": (b">a\nAC\x00GT\n", 400, "invalid_fasta", None, 2),
        "not-utf8": (b">a\nAC\xffGT\n", 400, "invalid_fasta", None, 2),
    }
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            for name, (content, *_rest) in cases.items():
                out[name] = await client.post(PROMOTER, content=content, headers=FASTA)
            if has_lncrna:
                out["lnc-before-header"] = await client.post(LNCRNA, content=b"ACGT\n>a\nACGT\n",
                                                             headers=FASTA)
            out["json-empty"] = await client.post(PROMOTER, content=b"", headers={"Content-Type": "application/json"})
            out["multipart-empty-file"] = await client.post(PROMOTER, files={"file": ("x.fa", b"", "text/plain")})
            out["multipart-no-file"] = await client.post(PROMOTER, files={"other": ("x.fa", b">a\nACGT\n")})
            out["multipart-bad"] = await client.post(PROMOTER, files={"file": ("x.fa", b"ACGT\n>a\nAC\n")})
            out["json-duplicate"] = await client.post(PROMOTER, json={"sequences": [
                {"id": "dup", "sequence": "ACGT"}, {"id": "dup", "sequence": "ACGA"}]})
        return out

    out = run(body())
    for name, (_content, status, code, record_id, line) in cases.items():
        err = assert_error(out[name], status, code, record_id=record_id, line=line)
        if line is not None:
            assert f"line {line}" in err["message"], (name, err)
    if has_lncrna:
        assert_error(out["lnc-before-header"], 400, "invalid_fasta", line=1)
    assert_error(out["json-empty"], 400, "empty_input")
    assert_error(out["multipart-empty-file"], 400, "empty_input")
    assert_error(out["multipart-no-file"], 400, "empty_input")
    assert_error(out["multipart-bad"], 400, "invalid_fasta", line=1)
    assert_error(out["json-duplicate"], (400, 409, 422), record_id="dup")


def test_unknown_model(models_dir):
    names = ["nope", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "ALL", "promoter/base", ""]

    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            for n in names:
                # an invalid body too: the model is checked first
                out[PROMOTER, n] = await client.post(PROMOTER, params={"model": n}, content=b"garbage",
                                                     headers=FASTA)
            out[LNCRNA, "nope"] = await client.post(LNCRNA, params={"model": "nope"}, content=b">a\nACGT\n",
                                                    headers=FASTA)
            out[LNCRNA, "../../etc/passwd"] = await client.post(
                LNCRNA, params={"model": "../../etc/passwd"}, content=b">a\nACGT\n", headers=FASTA)
            out["too-long"] = await client.post(PROMOTER, params={"model": "x" * 65}, content=b">a\nACGT\n",
                                                headers=FASTA)
        return out

    out = run(body())
    for (path, n), resp in ((k, v) for k, v in out.items() if isinstance(k, tuple)):
        if path == PROMOTER and n == "":  # empty means "not given": the default model answers...
            assert_error(resp, 400, "invalid_fasta")  # ...and the body is then read
            continue
        err = assert_error(resp, 404, "model_not_found")
        assert "root:" not in resp.text
        assert str(models_dir) not in err["message"]
    assert_error(out["too-long"], 422, "invalid_parameter")


def test_invalid_sequences(models_dir):
    bad_fasta = b">good\nACGTACGT\n>bad_one with description\nACGTAC\nGTXACGT\n"
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            out["fasta"] = await client.post(PROMOTER, content=bad_fasta, headers=FASTA)
            out["fasta-all"] = await client.post(PROMOTER, params={"model": "all"}, content=bad_fasta,
                                                 headers=FASTA)
            out["multipart"] = await client.post(PROMOTER, files={"file": ("x.fa", gzip.compress(bad_fasta))})
            out["json"] = await client.post(PROMOTER, json={"sequences": [
                {"id": "good", "sequence": "ACGT"}, {"id": "bad_one", "sequence": "ACGT-ACGT"}]})
            out["json-empty-seq"] = await client.post(PROMOTER, json={"sequences": [
                {"id": "good", "sequence": "ACGT"}, {"id": "bad_one", "sequence": "  "}]})
            out["digits"] = await client.post(PROMOTER, content=b">bad_one\nACGT1234\n", headers=FASTA)
            out["protein"] = await client.post(PROMOTER, content=b">bad_one\nMEEPQSDPSV\n", headers=FASTA)
            if has_lncrna:
                out["lnc"] = await client.post(LNCRNA, content=bad_fasta, headers=FASTA)
        return out

    out = run(body())
    for name, resp in out.items():
        err = assert_error(resp, 422, "invalid_sequence", record_id="bad_one")
        assert "good" not in err["message"], name
    assert_error(out["fasta"], 422, "invalid_sequence", record_id="bad_one", line=5)  # the line holding the X
    assert "'X'" in out["fasta"].json()["error"]["message"]


def test_size_and_count_limits(models_dir):
    settings = make_settings(models_dir, max_sequence_length=50, max_upload_bytes=2048, max_records=3)
    big = b">a\n" + b"ACGTACGTAC\n" * 300  # 3,303 bytes
    bomb = gzip.compress(b">a\n" + b"ACGTACGTAC\n" * 2000)  # small compressed, 22 kB decompressed
    assert len(bomb) < 2048
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def chunks():
        for _ in range(10):
            yield b">x\n" + b"A" * 400 + b"\n"

    async def body():
        out = {}
        async with serving(settings) as client:
            fasta = lambda content: client.post(PROMOTER, content=content, headers=FASTA)  # noqa: E731
            out["at-limit"] = await fasta(b">a\n" + b"ACGTACGTAC\n" * 5)
            out["too-long"] = await fasta(b">a\n" + b"A" * 51 + b"\n")
            out["too-long-wrapped"] = await fasta(b">ok\nACGT\n>a\n" + b"A" * 30 + b"\n" + b"C" * 21 + b"\n")
            out["json-at-limit-with-spaces"] = await client.post(PROMOTER, json={"sequences": [
                {"id": "a", "sequence": "ACGTACGTAC " * 5}]})
            out["json-too-long"] = await client.post(PROMOTER, json={"sequences": [
                {"id": "ok", "sequence": "ACGT"}, {"id": "a", "sequence": "A" * 51}]})
            out["big-raw"] = await fasta(big)
            out["big-multipart"] = await client.post(PROMOTER, files={"file": ("x.fa", big)})
            out["big-json"] = await client.post(PROMOTER, json={"sequences": [
                {"id": f"s{i}", "sequence": "ACGT" * 12} for i in range(40)]})
            out["bomb-raw"] = await client.post(PROMOTER, content=bomb,
                                                headers={**FASTA, "Content-Encoding": "gzip"})
            out["bomb-multipart"] = await client.post(PROMOTER, files={"file": ("x.fa.gz", bomb)})
            out["big-chunked"] = await client.post(PROMOTER, content=chunks(), headers=FASTA)
            out["three"] = await fasta(b">a\nACGT\n>b\nACGT\n>c\nACGT\n")
            out["four"] = await fasta(b">a\nACGT\n>b\nACGT\n>c\nACGT\n>d\nACGT\n")
            out["four-json"] = await client.post(PROMOTER, json={"sequences": [
                {"id": i, "sequence": "ACGT"} for i in "abcd"]})
            if has_lncrna:
                out["four-lnc"] = await client.post(
                    LNCRNA, content=b">a\nACGT\n>b\nACGT\n>c\nACGT\n>d\nACGT\n", headers=FASTA)
        return out

    out = run(body())
    assert results_of(out["at-limit"])[0]["length"] == 50
    assert results_of(out["json-at-limit-with-spaces"])[0]["length"] == 50
    assert len(results_of(out["three"])) == 3
    for name in ("too-long", "too-long-wrapped", "json-too-long"):
        err = assert_error(out[name], 422, "sequence_too_long", record_id="a")
        assert "50" in err["message"]
    for name in ("big-raw", "big-multipart", "big-json", "bomb-raw", "bomb-multipart", "big-chunked"):
        assert_error(out[name], 413, "payload_too_large")
    for name in ("four", "four-json", "four-lnc"):
        if name in out:
            assert_error(out[name], 413, "too_many_records")


def test_overload_is_429_with_retry_after_and_all_or_nothing(models_dir):
    settings = make_settings(models_dir, max_queue=5)
    ten = to_fasta([Rec(f"s{i}", "ACGTTGCA" * (i + 1)) for i in range(10)])
    five = to_fasta([Rec(f"s{i}", "ACGTTGCA" * (i + 1)) for i in range(5)])

    async def body():
        async with serving(settings) as client:
            over = await client.post(PROMOTER, content=ten, headers=FASTA)
            over_json = await client.post(PROMOTER, json={"sequences": [
                {"id": f"s{i}", "sequence": "ACGT" * 10} for i in range(10)]})
            over_all = await client.post(PROMOTER, params={"model": "all"}, content=ten, headers=FASTA)
            ok = await client.post(PROMOTER, content=five, headers=FASTA)  # nothing was left queued
            ok_all = await client.post(PROMOTER, params={"model": "all"}, content=five, headers=FASTA)
            metrics = (await client.get("/metrics")).text
        return over, over_json, over_all, ok, ok_all, metrics

    over, over_json, over_all, ok, ok_all, metrics = run(body())
    for resp in (over, over_json, over_all):
        assert_error(resp, 429, "overloaded")
        retry = resp.headers["retry-after"]
        assert retry.isdigit() and int(retry) >= 1
    assert len(results_of(ok)) == 5 and len(results_of(ok_all)) == 5
    assert metric(metrics, "dnabert_rejected_requests_total", reason="overloaded") == 3
    assert metric(metrics, "dnabert_requests_total", endpoint="promoter", status="429") == 3
    assert metric(metrics, "dnabert_queue_depth") == 0


def test_content_types_json_bodies_and_parameters(models_dir):
    bad_json = {
        "truncated": b'{"sequences": [',
        "not-json": b"not json at all",
        "wrong-container": b'{"sequences": "ACGT"}',
        "id-not-string": b'{"sequences": [{"id": 1, "sequence": "ACGT"}]}',
        "sequence-not-string": b'{"sequences": [{"id": "a", "sequence": ["ACGT"]}]}',
        "missing-sequence": b'{"sequences": [{"id": "a"}]}',
        "empty-id": b'{"sequences": [{"id": "", "sequence": "ACGT"}]}',
        "extra-field": b'{"sequences": [{"id": "a", "sequence": "ACGT", "label": 1}]}',
        "top-level-list": b'[{"id": "a", "sequence": "ACGT"}]',
        "null": b"null",
    }
    bad_params = [
        (PROMOTER, {"threshold": 2}), (PROMOTER, {"threshold": -0.1}), (PROMOTER, {"threshold": "abc"}),
        (PROMOTER, {"threshold": "nan"}), (LNCRNA, {"threshold_nucleus": 1.5}),
        (LNCRNA, {"threshold_cytoplasm": -1}), (LNCRNA, {"threshold_extracellular_vesicle": "x"}),
    ]
    has_lncrna = (models_dir / "lncrna-localization").is_dir()

    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            for media in ("application/xml", "image/png", "application/x-www-form-urlencoded", "text/html"):
                out["415", media] = await client.post(PROMOTER, content=b">a\nACGT\n",
                                                      headers={"Content-Type": media})
            if has_lncrna:
                out["415", "lnc"] = await client.post(LNCRNA, content=b">a\nACGT\n",
                                                      headers={"Content-Type": "application/xml"})
            for name, content in bad_json.items():
                out["json", name] = await client.post(PROMOTER, content=content,
                                                      headers={"Content-Type": "application/json"})
            out["json-empty-list"] = await client.post(PROMOTER, json={"sequences": []})
            for i, (path, params) in enumerate(bad_params):
                out["param", i] = await client.post(path, params=params, content=b">a\nACGT\n", headers=FASTA)
            out["405"] = await client.get(PROMOTER)
            out["404"] = await client.get("/no/such/route")
        return out

    out = run(body())
    for key, resp in out.items():
        if key[0] == "415":
            assert_error(resp, 415, "unsupported_media_type")
        elif key[0] == "json":
            assert_error(resp, 422, "invalid_json")
        elif key[0] == "param":
            assert_error(resp, 422, "invalid_parameter")
    err = assert_error(out["json-empty-list"], (400, 422), ("invalid_json", "empty_input"))
    assert (out["json-empty-list"].status_code, err["code"]) in {(422, "invalid_json"), (400, "empty_input")}
    assert "threshold" in out["param", 0].json()["error"]["message"]
    assert_error(out["405"], 405)
    assert_error(out["404"], 404)


def test_not_ready_before_start(models_dir):
    settings = make_settings(models_dir)

    async def body():
        out = {}
        for label, service in (("implicit", None), ("explicit", InferenceService(settings))):
            async with serving(settings, service, start=False) as client:
                out[label, "healthz"] = await client.get("/healthz")
                out[label, "readyz"] = await client.get("/readyz")
                out[label, "promoter"] = await client.post(PROMOTER, content=b">a\nACGT\n", headers=FASTA)
                out[label, "promoter-json"] = await client.post(PROMOTER, json={"sequences": [
                    {"id": "a", "sequence": "ACGT"}]})
                out[label, "promoter-all"] = await client.post(PROMOTER, params={"model": "all"},
                                                               content=b">a\nACGT\n", headers=FASTA)
                out[label, "lncrna"] = await client.post(LNCRNA, content=b">a\nACGT\n", headers=FASTA)
        return out

    out = run(body())
    for label in ("implicit", "explicit"):
        assert out[label, "healthz"].status_code == 200
        assert out[label, "healthz"].json()["status"] == "ok"
        assert out[label, "readyz"].status_code == 503
        assert out[label, "readyz"].json()["status"] == "not_ready"
        for what in ("promoter", "promoter-json", "promoter-all", "lncrna"):
            assert_error(out[label, what], 503, "not_ready")


def test_not_ready_after_shutdown(models_dir):
    async def body():
        app = create_app(make_settings(models_dir))
        async with app.router.lifespan_context(app):
            pass
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/readyz"),
                    await client.post(PROMOTER, content=b">a\nACGT\n", headers=FASTA))

    ready, predict = run(body())
    assert ready.status_code == 503
    assert_error(predict, 503, "not_ready")


# ------------------------------------------------------------------------------------------
# 6. X-Request-ID


def test_request_id_echoed_or_generated(models_dir):
    async def body():
        out = {}
        async with serving(make_settings(models_dir)) as client:
            rid = {"X-Request-ID": "client-req-42"}
            out["ok"] = await client.post(PROMOTER, content=b">a\nACGT\n", headers={**FASTA, **rid})
            out["csv"] = await client.post(PROMOTER, params={"format": "csv"}, content=b">a\nACGT\n",
                                           headers={**FASTA, **rid})
            out["error"] = await client.post(PROMOTER, content=b"ACGT\n", headers={**FASTA, **rid})
            out["404"] = await client.post(PROMOTER, params={"model": "nope"}, content=b">a\nACGT\n",
                                           headers={**FASTA, **rid})
            out["422"] = await client.post(PROMOTER, params={"threshold": 3}, content=b">a\nACGT\n",
                                           headers={**FASTA, **rid})
            out["healthz"] = await client.get("/healthz", headers=rid)
            out["gen1"] = await client.post(PROMOTER, content=b">a\nACGT\n", headers=FASTA)
            out["gen2"] = await client.post(PROMOTER, content=b">a\nACGT\n", headers=FASTA)
            out["gen-error"] = await client.post(PROMOTER, content=b"", headers=FASTA)
            out["too-long"] = await client.post(PROMOTER, content=b">a\nACGT\n",
                                                headers={**FASTA, "X-Request-ID": "x" * 500})
        return out

    out = run(body())
    for name in ("ok", "csv", "error", "404", "422", "healthz"):
        assert out[name].headers["x-request-id"] == "client-req-42", name
    for name in ("error", "404", "422"):
        assert assert_error(out[name], (400, 404, 422))["request_id"] == "client-req-42"
    generated = [out[n].headers.get("x-request-id", "") for n in ("gen1", "gen2", "gen-error", "too-long")]
    assert all(g.strip() for g in generated) and len(set(generated)) == 4
    assert "x" * 500 not in generated
    assert assert_error(out["gen-error"], 400, "empty_input")["request_id"] == generated[2]


class _FailingService(InferenceService):
    """A started service whose promoter prediction hits an unexpected bug."""

    async def predict(self, *args, **kwargs):
        raise RuntimeError("/opt/secret/models/promoter/model.onnx: unexpected failure")


def _internal_error(models_dir):
    settings = make_settings(models_dir)

    async def body():
        async with serving(settings, _FailingService(settings), raise_app_exceptions=False) as client:
            return await client.post(PROMOTER, content=b">a\nACGT\n", headers={**FASTA, "X-Request-ID": "rid-500"})

    return run(body())


def test_unexpected_error_is_500_without_details(models_dir):
    resp = _internal_error(models_dir)
    assert resp.status_code == 500
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == "internal_error"
    assert body["error"]["request_id"] == "rid-500"
    assert "/opt/secret" not in resp.text and "model.onnx" not in resp.text and "Traceback" not in resp.text


def test_unexpected_error_echoes_request_id_header(models_dir):
    resp = _internal_error(models_dir)
    assert resp.status_code == 500
    assert resp.headers.get("x-request-id") == "rid-500"


# ------------------------------------------------------------------------------------------
# 7. /models, /healthz, /readyz, /metrics


def test_models_health_and_readiness(models_dir):
    async def body():
        async with serving(make_settings(models_dir)) as client:
            return (await client.get("/models"), await client.get("/healthz"), await client.get("/readyz"))

    models, health, ready = run(body())
    on_disk = {(task, name): folder for task, name, folder in discover(models_dir)}
    assert models.status_code == 200
    data = models.json()
    assert data["default_promoter_model"] == "cnn_bilstm_avg"
    assert "CPUExecutionProvider" in data["available_providers"]
    assert {(m["task"], m["name"]) for m in data["models"]} == set(on_disk)
    assert len(data["models"]) == len(on_disk)
    for m in data["models"]:
        card = json.loads((on_disk[m["task"], m["name"]] / CARD_FILE).read_text())
        assert m["card"]["task"] == card["task"] == m["task"]
        assert m["card"]["labels"] == card["labels"]
        assert m["card"]["sha256"] == card["sha256"]
        assert m["card"]["variant"] == card["variant"]
        assert m["providers"] == ["CPUExecutionProvider"]
        assert m["precision"] == "fp32"
        assert m["ready"] is True

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["detail"] == {f"{task}/{name}": True for task, name in on_disk}


def test_metrics(models_dir):
    fasta = to_fasta(PROMOTER_RECORDS[:4])

    async def body():
        async with serving(make_settings(models_dir)) as client:
            before = (await client.get("/metrics")).text
            for _ in range(2):
                assert (await client.post(PROMOTER, content=fasta, headers=FASTA)).status_code == 200
            assert (await client.post(PROMOTER, params={"format": "csv"}, content=fasta,
                                      headers=FASTA)).status_code == 200
            middle = await client.get("/metrics")
            bad = await client.post(PROMOTER, content=b">a\nACGTXX\n", headers=FASTA)
            after = (await client.get("/metrics")).text
        return before, middle, bad, after

    before, middle, bad, after = run(body())
    assert middle.status_code == 200
    assert middle.headers["content-type"].startswith("text/plain")
    text = middle.text
    fams = families(text)
    assert fams["dnabert_requests"].type == "counter"
    labels = dict(endpoint="promoter", model="cnn_bilstm_avg")
    assert metric(before, "dnabert_requests_total", **labels) == 0
    assert metric(text, "dnabert_requests_total", status="200", **labels) == 3
    assert metric(text, "dnabert_sequences_total", status="200", **labels) == 12
    assert fams["dnabert_batch_size"].type == "histogram"
    # warm-up batches count as well, so at least one batch more than before the requests
    model = "promoter/cnn_bilstm_avg"
    assert metric(text, "dnabert_batch_size_count", model=model) > metric(before, "dnabert_batch_size_count",
                                                                          model=model)
    assert metric(text, "dnabert_batch_size_bucket", model=model, le="+Inf") == \
        metric(text, "dnabert_batch_size_count", model=model)
    assert metric(text, "dnabert_batch_size_sum", model=model) >= 12
    assert fams["dnabert_queue_depth"].type == "gauge"
    depth_models = {s.labels["model"] for s in fams["dnabert_queue_depth"].samples}
    assert model in depth_models and metric(text, "dnabert_queue_depth") == 0
    eff = [s.value for s in fams["dnabert_padding_efficiency"].samples if s.labels["model"] == model]
    assert len(eff) == 1 and 0.0 < eff[0] <= 1.0
    assert "dnabert_request_seconds" in fams and "dnabert_inference_seconds" in fams

    assert_error(bad, 422, "invalid_sequence")
    assert metric(after, "dnabert_requests_total", status="422", **labels) == \
        metric(text, "dnabert_requests_total", status="422", **labels) + 1
    assert metric(after, "dnabert_requests_total", status="200", **labels) == 3


def test_metrics_count_requests_refused_before_inference(models_dir):
    async def body():
        async with serving(make_settings(models_dir, max_records=3)) as client:
            before = (await client.get("/metrics")).text
            responses = [
                await client.post(PROMOTER, content=b"ACGT\n>a\nACGT\n", headers=FASTA),
                await client.post(PROMOTER, content=b">a\nA\n>b\nA\n>c\nA\n>d\nA\n", headers=FASTA),
                await client.post(PROMOTER, content=b">a\nACGT\n", headers={"Content-Type": "application/xml"}),
                await client.post(PROMOTER, content=b"{", headers={"Content-Type": "application/json"}),
                await client.post(PROMOTER, params={"model": "nope"}, content=b">a\nACGT\n", headers=FASTA),
            ]
            after = (await client.get("/metrics")).text
        return before, responses, after

    before, responses, after = run(body())
    assert [r.status_code for r in responses] == [400, 413, 415, 422, 404]
    for status in ("400", "413", "415", "422", "404"):
        assert metric(after, "dnabert_requests_total", endpoint="promoter", status=status) == \
            metric(before, "dnabert_requests_total", endpoint="promoter", status=status) + 1, status


# ------------------------------------------------------------------------------------------
# 8. OpenAPI


def _openapi(models_dir):
    async def body():
        async with serving(make_settings(models_dir), start=False) as client:
            return await client.get("/openapi.json"), await client.get("/docs")

    return run(body())


def test_openapi_documents_bodies_and_errors(models_dir):
    spec_resp, docs = _openapi(models_dir)
    assert spec_resp.status_code == 200
    spec = spec_resp.json()
    schemas = spec["components"]["schemas"]
    error_ref = "#/components/schemas/ErrorResponse"
    for path, ok_schema in ((PROMOTER, "PromoterResponse"), (LNCRNA, "LncRnaResponse")):
        op = spec["paths"][path]["post"]
        content = op["requestBody"]["content"]
        assert {"multipart/form-data", "text/plain", "text/x-fasta", "application/json"} <= set(content)
        assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == \
            f"#/components/schemas/{ok_schema}"
        for status in ("400", "404", "413", "415", "422", "429", "503"):
            assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"] == error_ref, status
            assert op["responses"][status]["description"]
        params = {p["name"] for p in op["parameters"]}
        assert {"model", "format"} <= params
    assert {"threshold"} <= {p["name"] for p in spec["paths"][PROMOTER]["post"]["parameters"]}
    assert {"threshold_nucleus", "threshold_cytoplasm", "threshold_extracellular_vesicle"} <= \
        {p["name"] for p in spec["paths"][LNCRNA]["post"]["parameters"]}
    assert schemas["ErrorResponse"]["properties"]["error"]["$ref"] == "#/components/schemas/ErrorBody"
    assert {"code", "message", "record_id", "line", "request_id"} <= set(schemas["ErrorBody"]["properties"])
    assert {"/models", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])

    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.text.lower()


def test_openapi_references_resolve(models_dir):
    spec = _openapi(models_dir)[0].json()
    schemas = spec["components"]["schemas"]
    prefix = "#/components/schemas/"
    refs = set(all_refs(spec))
    assert all(r.startswith(prefix) for r in refs), refs
    missing = sorted(r for r in refs if r[len(prefix):] not in schemas)
    assert not missing, missing
    json_body = spec["paths"][PROMOTER]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert json_body["$ref"] == prefix + "PredictRequest"
    assert "sequences" in schemas["PredictRequest"]["properties"]
