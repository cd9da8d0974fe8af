"""``POST /variants/promoter`` over HTTP, on the embedded promoter models.

Every scored value is checked against ``/predict/promoter`` on the window sequences written out
by the test itself (:func:`tests.service.contract.test_variant_windows.expected_windows`, their
reverse complements for ``-``); the VCF answer is read back with pysam; REF mismatches, unknown
contigs and edges are flagged while the other records are scored; bad VCF lines are 422s naming
the line; and no path sent by a client is ever opened (an audit hook watches every ``open``).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tests.service.contract.test_variant_windows import (
    expected_windows,
    fasta_bytes,
    genome,
    variant_rows,
    variant_vcf,
)
from tests.service.robustness import (
    PROMOTER,
    assert_error,
    make_settings,
    needs_models,
    no_leak,
    run,
    serving,
)

pytestmark = needs_models
URL = "/variants/promoter"
TOL = 1e-6
VALUES = ("ref_probability", "alt_probability", "delta", "log_odds_ratio")
CONTIGS = genome()
VCF = variant_vcf(CONTIGS)
REFERENCE = fasta_bytes(CONTIGS)


def upload(vcf: str | bytes = VCF, reference: bytes | None = REFERENCE, **extra) -> dict:
    files = {"vcf": ("calls.vcf", vcf, "text/plain")}
    if reference is not None:
        files["reference"] = ("ref.fa", reference, "text/plain")
    files.update(extra)
    return files


def reverse_complement(seq: str) -> str:  # written out here, not imported: the test's own reading
    return seq[::-1].translate(str.maketrans("ACGT", "TGCA"))


async def predicted(client, windows: dict[str, str], model: str) -> dict[str, float]:
    resp = await client.post(PROMOTER, params={"model": model},
                             json={"sequences": [{"id": k, "sequence": s} for k, s in windows.items()]})
    assert resp.status_code == 200, resp.text
    return {r["id"]: r["probability"] for r in resp.json()["results"]}


# -- the values -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "strand"), [("base", "both"), ("cnn_bilstm_max", "+"), ("all", "-")])
def test_every_value_is_predict_on_its_windows(model, strand):
    rows = variant_rows(CONTIGS)

    async def body():
        async with serving(make_settings()) as client:
            resp = await client.post(URL, params={"model": model, "strand": strand}, files=upload())
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            windows = {}
            for e in answer["results"]:
                if e["delta"] is None:
                    continue
                ref_w, alt_w = expected_windows(CONTIGS, e["pos"], e["chrom"], e["ref"], e["alt"])
                for s in ("+", "-"):
                    windows[f"{e['id']}|{e['alt']}|{s}|ref"] = ref_w if s == "+" else reverse_complement(ref_w)
                    windows[f"{e['id']}|{e['alt']}|{s}|alt"] = alt_w if s == "+" else reverse_complement(alt_w)
            return answer, await predicted(client, windows, model)

    answer, p = run(body())
    assert answer["model"] == model and answer["strand"] == strand and answer["window"] == 300
    results = answer["results"]
    assert answer["count"] == len(results) == sum(len(r[4].split(",")) for r in rows)  # one per record and ALT
    by = {(e["id"], e["alt"]): e for e in results}
    scored = [e for e in results if e["delta"] is not None]
    assert {e["id"] for e in scored} == {"snv_tata", "chr1:1040:" + by_id(results, "chr1:1040")["ref"] + ":"
                                         + by_id(results, "chr1:1040")["alt"], "ins", "del", "multi"}
    assert len(scored) == 6  # the multi-allelic record's two base ALTs
    for e in scored:
        key = f"{e['id']}|{e['alt']}"
        strands = {"+": ["+"], "-": ["-"], "both": ["+", "-"]}[strand]
        values = e["per_strand"] if strand == "both" else {e["strand"]: {v: e[v] for v in VALUES}}
        assert e["strand"] in strands and set(values) == set(strands)
        for s, v in values.items():
            assert v["ref_probability"] == pytest.approx(p[f"{key}|{s}|ref"], abs=TOL), (key, s)
            assert v["alt_probability"] == pytest.approx(p[f"{key}|{s}|alt"], abs=TOL), (key, s)
            assert v["delta"] == v["alt_probability"] - v["ref_probability"]
        top = {v: e[v] for v in VALUES}
        assert top == values[e["strand"]] and top["delta"] == top["alt_probability"] - top["ref_probability"]
        if strand == "both":  # the top-level values are the strand with the larger |delta|
            assert abs(e["delta"]) == max(abs(values[s]["delta"]) for s in values)
    # flagged, not scored; the others went on
    assert by[("mismatch", by_id(results, "mismatch")["alt"])]["flags"] == ["ref_mismatch"]
    assert by_id(results, "unknown")["flags"] == ["unknown_contig"]
    assert by_id(results, "edge_left")["flags"] == ["edge"] == by_id(results, "edge_right")["flags"]
    assert by_id(results, "noalt")["flags"] == ["no_alt"] and by_id(results, "bnd")["flags"] == ["unsupported_allele"]
    assert [e["flags"] for e in results if e["id"] == "multi"] == [[], ["unsupported_allele"], ["unsupported_allele"],
                                                                   []]
    for e in results:
        if e["flags"]:
            assert all(e[v] is None for v in VALUES) and e["strand"] is None


def by_id(results: list[dict], prefix: str) -> dict:
    return next(e for e in results if e["id"].startswith(prefix))


# -- the outputs ------------------------------------------------------------------------------------

def test_vcf_answer_reads_back_with_pysam_typed_as_declared(tmp_path):
    pysam = pytest.importorskip("pysam")
    src = tmp_path / "calls.vcf"
    src.write_text(VCF)
    pysam.tabix_compress(str(src), str(tmp_path / "calls.vcf.gz"))
    bgzip = (tmp_path / "calls.vcf.gz").read_bytes()

    async def body():
        async with serving(make_settings()) as client:
            files = {**upload(), "vcf": ("calls.vcf.gz", bgzip, "application/gzip")}
            vcf = await client.post(URL, params={"model": "base", "format": "vcf"}, files=files)
            tsv = await client.post(URL, params={"model": "base"}, files=files,
                                    headers={"Accept": "text/tab-separated-values"})
            js = await client.post(URL, params={"model": "base"}, files=files)
            return vcf, tsv, js

    vcf, tsv, js = run(body())
    assert vcf.status_code == 200 and vcf.headers["content-type"].startswith("text/x-vcf")
    assert tsv.headers["content-type"].startswith("text/tab-separated-values")
    out = tmp_path / "answer.vcf"
    out.write_bytes(vcf.content)
    results = js.json()["results"]
    with pysam.VariantFile(str(out)) as reader:
        info = reader.header.info
        for name in ("DNABERT_REF_P", "DNABERT_ALT_P", "DNABERT_DELTA", "DNABERT_LOR", "DNABERT_DELTA_PLUS",
                     "DNABERT_LOR_MINUS"):
            assert (info[name].type, info[name].number) == ("Float", "A"), name
        assert (info["DNABERT_FLAGS"].type, info["DNABERT_FLAGS"].number) == ("String", "A")
        assert "DNABERT_model" in str(reader.header)
        records = list(reader)
    assert [(r.chrom, r.pos, r.ref) for r in records] == [row[:2] + row[3:4] for row in variant_rows(CONTIGS)]
    at = 0
    for rec in records:
        assert rec.info["DP"] >= 10 and str(rec).rstrip("\n").split("\t")[8:] == ["GT", "0/1"]  # kept as read
        if not rec.alts:
            assert "DNABERT_DELTA" not in rec.info
            at += 1
            continue
        entries = results[at:at + len(rec.alts)]
        at += len(rec.alts)
        deltas, flags = rec.info["DNABERT_DELTA"], rec.info["DNABERT_FLAGS"]
        assert len(deltas) == len(rec.alts) == len(flags)  # Number=A: one per ALT
        for value, flag, e in zip(deltas, flags, entries):
            if e["delta"] is None:
                assert value is None and flag == "|".join(e["flags"])
            else:
                assert isinstance(value, float) and value == pytest.approx(e["delta"], abs=TOL)
                assert flag == "."
        for name, field in (("DNABERT_REF_P_MINUS", "ref_probability"), ("DNABERT_ALT_P_PLUS", "alt_probability")):
            s = "-" if name.endswith("MINUS") else "+"
            for value, e in zip(rec.info[name], entries):
                assert (value is None) == (e["per_strand"] is None)
                if value is not None:
                    assert value == pytest.approx(e["per_strand"][s][field], abs=TOL)
    assert at == len(results)
    multi = next(r for r in records if r.id == "multi")
    assert len(multi.info["DNABERT_REF_P"]) == 4 and multi.info["DNABERT_REF_P"][1] is None
    import csv

    rows = list(csv.DictReader(io.StringIO(tsv.text), delimiter="\t"))
    assert len(rows) == len(results)
    for row, e in zip(rows, results):
        assert row["id"] == e["id"] and int(row["pos"]) == e["pos"] and row["flags"] == ";".join(e["flags"])
        assert (row["delta"] == "") == (e["delta"] is None)
        if e["delta"] is not None:
            assert float(row["delta"]) == e["delta"] and float(row["delta_minus"]) == e["per_strand"]["-"]["delta"]


# -- errors -----------------------------------------------------------------------------------------

HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


@pytest.mark.parametrize(("vcf", "line"), [
    ("##fileformat=VCFv4.2\nchr1\t5\t.\tA\tG\t.\t.\t.\n", 2),
    (HEAD + "chr1\t5\t.\tA\tG\t.\t.\t.\nchr1\tfive\t.\tA\tG\t.\t.\t.\n", 4),
    (HEAD + "chr1\t5\t.\tA\tQ\t.\t.\t.\n", 3),
    (HEAD + "chr1\t5\t.\tA\tG\t.\t.\n", 3),
    ("##fileformat=VCFv9\n", 1),
])
def test_a_bad_vcf_line_is_422_naming_it(vcf, line):
    async def body():
        async with serving(make_settings()) as client:
            return await client.post(URL, files=upload(vcf))

    err = assert_error(run(body()), 422, "invalid_vcf", line=line)
    assert f"line {line}" in err["message"]


def test_refusals():
    bad_reference = b">chr1\nACGT\nAC-T\n"
    small = "".join(VCF.splitlines(keepends=True)[:10])  # the header and the first two records

    async def body():
        async with serving(make_settings(max_records=5, max_upload_bytes=64 * 1024)) as client:
            return {
                "no_reference": await client.post(URL, files=upload(small, reference=None)),
                "bad_reference": await client.post(URL, files=upload(small, reference=bad_reference)),
                "no_vcf_field": await client.post(URL, files={"reference": ("r.fa", REFERENCE)}),
                "empty_vcf": await client.post(URL, files=upload(vcf=b"")),
                "too_many": await client.post(URL, files=upload()),
                "too_big": await client.post(URL, files=upload(small, reference=REFERENCE * 40)),
                "json_body": await client.post(URL, json={"vcf": small}),
                "model": await client.post(URL, params={"model": "nope"}, files=upload(small)),
                "format": await client.post(URL, params={"format": "bed"}, files=upload(small)),
                "strand": await client.post(URL, params={"strand": "up"}, files=upload(small)),
                "unknown_param": await client.post(URL, params={"reference": "/etc/hosts"}, files=upload(small)),
                "ok": await client.post(URL, files=upload(small)),
            }

    r = run(body())
    assert "DNABERT_REFERENCE_FASTA" in assert_error(r["no_reference"], 422, "missing_reference")["message"]
    err = assert_error(r["bad_reference"], 422, "invalid_sequence", record_id="chr1", line=3)
    assert "field 'reference'" in err["message"]
    assert_error(r["no_vcf_field"], 400, "empty_input")
    assert_error(r["empty_vcf"], 400, "empty_input")
    assert "more than 5 variants" in assert_error(r["too_many"], 413, "too_many_records")["message"]
    assert_error(r["too_big"], 413, "payload_too_large")
    assert_error(r["json_body"], 415, "unsupported_media_type")
    assert_error(r["model"], 404, "model_not_found")
    assert_error(r["format"], 406, "unsupported_format")
    assert_error(r["strand"], 422, "invalid_parameter")
    assert_error(r["unknown_param"], 422, "invalid_parameter")
    assert r["ok"].status_code == 200 and r["ok"].json()["count"] == 2


# -- the server's reference, and client paths -----------------------------------------------------------

class OpenWatch:
    """Every file opened by this process while :attr:`paths` is watched (an audit hook: it sees
    ``open()``, ``os.open`` and what pyfaidx does alike). Hooks cannot be removed; it is
    installed once and records only while :attr:`on`."""

    on = False
    opened: list[str] = []
    installed = False

    @classmethod
    def start(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        cls.opened = []
        cls.on = True

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if cls.on and event == "open" and isinstance(args[0], (str, bytes, Path)):
            cls.opened.append(str(args[0]))


def test_a_client_path_is_never_opened_and_the_server_reference_serves(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "ref.fa").write_bytes(REFERENCE)
    (secret / "calls.vcf").write_text(VCF)
    served = tmp_path / "genome" / "hg.fa"
    served.parent.mkdir()
    served.write_bytes(REFERENCE)
    paths = str(secret / "ref.fa").encode()

    async def body():
        out = {}
        async with serving(make_settings()) as client:
            out["uploaded"] = await client.post(URL, params={"model": "base"}, files=upload())
            OpenWatch.start()
            try:  # paths as the field contents, as file names, and as extra fields
                out["path_as_reference"] = await client.post(URL, files=upload(
                    VCF, paths, reference_fasta=(None, paths), path=(None, str(secret / "calls.vcf"))))
                out["path_as_vcf"] = await client.post(URL, files={
                    "vcf": (str(secret / "calls.vcf"), str(secret / "calls.vcf").encode()),
                    "reference": (str(secret / "ref.fa"), REFERENCE)})
            finally:
                OpenWatch.on = False
            opened_without = list(OpenWatch.opened)
        async with serving(make_settings(reference_fasta=served)) as client:
            OpenWatch.start()
            try:
                out["server_multipart"] = await client.post(URL, params={"model": "base"}, files=upload(
                    reference=None, reference_fasta=(None, paths)))
                out["server_raw"] = await client.post(URL, params={"model": "base"}, content=VCF.encode(),
                                                      headers={"Content-Type": "text/plain"})
            finally:
                OpenWatch.on = False
        async with serving(make_settings(reference_fasta=tmp_path / "gone.fa")) as client:
            out["server_gone"] = await client.post(URL, files=upload(reference=None))
        return out, opened_without, list(OpenWatch.opened)

    out, opened_without, opened_with = run(body())
    for opened in (opened_without, opened_with):
        assert not [p for p in opened if "secret" in p], opened
    assert str(served) in opened_with  # the hook sees opens: the server's own reference was read
    err = assert_error(out["path_as_reference"], 400, "invalid_fasta", line=1)  # read as FASTA text
    assert "field 'reference'" in err["message"]
    assert_error(out["path_as_vcf"], 422, "invalid_vcf", line=1)
    assert out["uploaded"].status_code == 200
    for name in ("server_multipart", "server_raw"):
        assert out[name].status_code == 200, out[name].text
        assert out[name].json() == out["uploaded"].json()  # the same numbers from the server's reference
    err = assert_error(out["server_gone"], 503, "reference_unavailable")
    no_leak(out["server_gone"].text, tmp_path)


def test_metrics_count_the_endpoint_and_the_api_key_applies():
    async def body():
        async with serving(make_settings(api_key="k3y")) as client:
            denied = await client.post(URL, files=upload())
            ok = await client.post(URL, params={"model": "base", "strand": "plus"}, files=upload(),
                                   headers={"Authorization": "Bearer k3y"})
            plus = await client.post(URL + "?model=base&strand=+", files=upload(),  # '+' reads as ' '
                                     headers={"Authorization": "Bearer k3y"})
            return denied, ok, plus, (await client.get("/metrics")).text

    denied, ok, plus, metrics = run(body())
    assert_error(denied, 401, "unauthorized")
    assert ok.status_code == 200 and ok.json()["strand"] == "+" and plus.json() == ok.json()
    n = ok.json()["count"]
    assert f'dnabert_sequences_total{{endpoint="variants/promoter",model="base",status="200"}} {2 * n:.1f}' in metrics
