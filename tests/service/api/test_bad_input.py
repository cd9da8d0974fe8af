"""Every class of bad input the service is expected to meet, and the answer it gets.

One table (:data:`CASES`) drives the requests: each class of input, its expected status and
error code and, where it applies, the record and line the error names. The same table is the
"bad input" table of ``docs/robustness.md``; :func:`test_the_documented_table_matches` keeps the
two in step. Inputs that are accepted (line endings, case, RNA, IUPAC codes, runs of N) are
checked against the plain-DNA answer for the same records.

Oversized bodies are streamed from generators and never built in memory: the "1 GB line" is a
lazily generated gigabyte of which the service must read no more than its limit.
"""

from __future__ import annotations

import gzip
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.service.robustness import (
    FASTA,
    LNCRNA,
    PROMOTER,
    REPO,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    run,
    serving,
    small_models_dir,
)

pytestmark = needs_models

LIMIT = 64 * 1024  # max_upload_bytes of these tests
MAX_RECORDS = 5
MAX_LENGTH = 1000
CHUNK = 64 * 1024
GIB = 1 << 30

_rng = random.Random(6)
DNA = "".join(_rng.choice("ACGT") for _ in range(300))
DNA2 = "".join(_rng.choice("ACGT") for _ in range(250))
REFERENCE = [("rec1", DNA), ("rec2", DNA2)]
IUPAC = DNA[:100] + "RYSWKMBDHVN" + DNA[111:]
PEPTIDE = b"MKVHRSWYDKMNGTAVHDRSWYKMKVHRSWYDGAMKVDHKRSWM"  # no E F I L P Q: every letter an IUPAC code


def _boundary_body(parts: list[tuple[str, bytes]], boundary: str = "XyZ0123") -> tuple[bytes, dict]:
    body = b""
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.fa\"\r\n"
                 f"Content-Type: text/plain\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _multipart(parts: list[tuple[str, bytes]]) -> dict:
    body, headers = _boundary_body(parts)
    return dict(content=body, headers=headers)


def _bomb() -> bytes:
    """50 MiB of FASTA text in about 50 kB of gzip: under the upload limit, 800 times over it expanded."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(b">bomb\n")]
    line = b"A" * (1 << 20)
    out += [z.compress(line) for _ in range(50)]
    out.append(z.flush())
    data = b"".join(out)
    assert len(data) < LIMIT
    return data


BOMB = _bomb()


class Streamed:
    """A request body produced lazily (sent chunked, without Content-Length); counts what was read."""

    def __init__(self, head: bytes, total: int, fill: bytes = b"A"):
        self.head, self.total, self.fill = head, total, fill
        self.sent = 0

    async def __aiter__(self):
        yield self.head
        self.sent += len(self.head)
        block = self.fill * CHUNK
        while self.sent < self.total:
            self.sent += len(block)
            yield block


def _gigabyte_line() -> dict:
    stream = Streamed(b">big\n", GIB)
    return dict(content=stream, headers=FASTA, stream=stream)


def _gigabyte_multipart() -> dict:
    head = (b"--XyZ0123\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.fa\"\r\n\r\n>big\n")
    stream = Streamed(head, GIB)
    return dict(content=stream, headers={"Content-Type": "multipart/form-data; boundary=XyZ0123"}, stream=stream)


@dataclass
class Case:
    label: str  # as in the table of docs/robustness.md
    request: dict
    status: int
    code: str | None = None  # None: accepted (200)
    record_id: str | None = None
    line: int | None = None
    path: str = PROMOTER
    params: dict = field(default_factory=dict)
    same_as_reference: bool = False  # 200 with the same scores as the plain upper-case DNA records


def cases() -> list[Case]:
    text = dict(headers=FASTA)
    utf16 = ">a\nACGT\n".encode("utf-16")
    noise = random.Random(1)
    garbage = bytes(noise.randrange(256) for _ in range(4000))
    gz = gzip.compress(fasta(REFERENCE))
    return [
        Case("empty body", dict(content=b"", **text), 400, "empty_input"),
        Case("only blank lines and comments", dict(content=b"\n \n;comment\n", **text), 400, "empty_input"),
        Case("no '>' header at all", dict(content=DNA.encode() + b"\n", **text), 400, "invalid_fasta", line=1),
        Case("header without sequence", dict(content=b">lonely\n>rec2\nACGT\n", **text), 400, "invalid_fasta",
             record_id="lonely", line=1),
        Case("header without identifier", dict(content=b">\nACGT\n", **text), 400, "invalid_fasta", line=1),
        Case("sequence before the first header", dict(content=b"\nACGT\n>a\nACGT\n", **text), 400,
             "invalid_fasta", line=2),
        Case("duplicate record ids", dict(content=b">a\nACGT\n>b\nACGT\n>a\nACGT\n", **text), 400,
             "invalid_fasta", record_id="a", line=5),
        Case("Windows line endings (CRLF)", dict(content=fasta(REFERENCE, "\r\n"), **text), 200,
             same_as_reference=True),
        Case("old-Mac line endings (CR)", dict(content=fasta(REFERENCE, "\r"), **text), 200,
             same_as_reference=True),
        Case("lowercase", dict(content=fasta([(r, s.lower()) for r, s in REFERENCE]), **text), 200,
             same_as_reference=True),
        Case("RNA (U for T)", dict(content=fasta([(r, s.replace("T", "U")) for r, s in REFERENCE]), **text), 200,
             same_as_reference=True),
        Case("IUPAC ambiguity codes", dict(content=fasta([("iupac", IUPAC)]), **text), 200),
        Case("long runs of N", dict(content=fasta([("runs", DNA[:50] + "N" * 800 + DNA[:50]),
                                                   ("all_n", "N" * 1000)]), **text), 200),
        Case("protein sequence", dict(content=b">p53\nMEEPQSDPSVEPPLSQETFSDLWKLLPENNV\n", **text), 422,
             "invalid_sequence", record_id="p53", line=2),
        Case("protein written only with IUPAC letters", dict(content=b">pep\n" + PEPTIDE + b"\n", **text), 422,
             "invalid_sequence", record_id="pep", line=1),
        Case("digits and punctuation", dict(content=b">ok\nACGT\n>num\nACGT12-*.\n", **text), 422,
             "invalid_sequence", record_id="num", line=4),
        Case("invalid character on a later line", dict(content=b">ok\nACGT\n>w\nACGTACGT\nACGTACGT\nACXT\n", **text),
             422, "invalid_sequence", record_id="w", line=6),
        Case("non-ASCII letter (sharp s, long s)", dict(content=">s\nACG\u00df\n>t\nAC\u017fT\n".encode(), **text),
             422, "invalid_sequence", record_id="s", line=2),
        Case("record id with a control character", dict(content=b">a\x01b\nACGT\n", **text), 400,
             "invalid_fasta", line=1),
        Case("record id with a bidi override (U+202E)", dict(content=">x\u202egpj.exe\nACGT\n".encode(), **text),
             400, "invalid_fasta", line=1),
        Case("FASTA record id over 1,000 characters", dict(content=b">" + b"i" * 5000 + b"\nACGT\n", **text), 400,
             "invalid_fasta", line=1),
        Case("non-UTF-8 bytes", dict(content=b">a\nACGT\n>b\nAC\xe9GT\n", **text), 400, "invalid_fasta", line=4),
        Case("UTF-16 text", dict(content=utf16, **text), 400, "invalid_fasta"),
        Case("binary garbage", dict(content=garbage, **text), 400, "invalid_fasta"),
        Case("1 GB line, streamed without Content-Length", _gigabyte_line(), 413, "payload_too_large"),
        Case("1 GB multipart upload, streamed", _gigabyte_multipart(), 413, "payload_too_large"),
        Case("Content-Length over the limit", dict(content=b"A" * (LIMIT + 1), **text), 413, "payload_too_large"),
        Case("gzip bomb (Content-Encoding: gzip)",
             dict(content=BOMB, headers={**FASTA, "Content-Encoding": "gzip"}), 413, "payload_too_large"),
        Case("gzip bomb in a multipart upload", _multipart([("file", BOMB)]), 413, "payload_too_large"),
        Case("truncated gzip", dict(content=gz[: len(gz) // 2], **text), 400, "invalid_fasta"),
        Case("gzip with trailing garbage", dict(content=gz + b"garbage", **text), 400, "invalid_fasta"),
        Case("unsupported Content-Encoding", dict(content=b">a\nACGT\n", headers={**FASTA, "Content-Encoding": "br"}),
             400, "invalid_fasta"),
        Case("more records than the limit",
             dict(content=fasta([(f"r{i}", "ACGT") for i in range(MAX_RECORDS + 1)]), **text), 413,
             "too_many_records"),
        Case("sequence over the length limit", dict(content=fasta([("ok", "ACGT"), ("long", "A" * (MAX_LENGTH + 1))]),
                                                   **text), 422, "sequence_too_long", record_id="long"),
        Case("wrong content type", dict(content=b">a\nACGT\n", headers={"Content-Type": "application/xml"}), 415,
             "unsupported_media_type"),
        Case("multipart without boundary", dict(content=b">a\nACGT\n", headers={"Content-Type": "multipart/form-data"}),
             400, "invalid_multipart"),
        Case("truncated multipart", dict(content=_boundary_body([("file", b">a\nACGT\n")])[0][:-12],
                                         headers=_boundary_body([])[1]), 400, "invalid_multipart"),
        Case("multipart with two 'file' fields", _multipart([("file", b">a\nACGT\n"), ("file", b">b\nACGT\n")]), 400,
             "invalid_multipart"),
        Case("multipart without a 'file' field", _multipart([("upload", b">a\nACGT\n")]), 400, "empty_input"),
        Case("malformed JSON", dict(content=b'{"sequences": [', headers={"Content-Type": "application/json"}), 422,
             "invalid_json"),
        Case("JSON with wrong types", dict(json={"sequences": [{"id": 7, "sequence": ["ACGT"]}]}), 422,
             "invalid_json"),
        Case("JSON with unknown fields", dict(json={"sequences": [{"id": "a", "sequence": "ACGT", "x": 1}]}), 422,
             "invalid_json"),
        Case("JSON with an empty list", dict(json={"sequences": []}), 422, "invalid_json"),
        Case("JSON with a duplicate key", dict(content=b'{"sequences": [{"id": "a", "sequence": "ACGT"}], '
                                                  b'"sequences": [{"id": "b", "sequence": "ACGT"}]}',
                                          headers={"Content-Type": "application/json"}), 422, "invalid_json"),
        Case("JSON record id with a control character", dict(json={"sequences": [{"id": "a\rb", "sequence": "ACGT"}]}),
             422, "invalid_json"),
        Case("JSON with duplicate ids", dict(json={"sequences": [{"id": "d", "sequence": "ACGT"},
                                                                {"id": "d", "sequence": "ACGA"}]}), 422,
             "invalid_json", record_id="d"),
        Case("query parameter out of range (threshold=1.5)", dict(content=b">a\nACGT\n", **text), 422,
             "invalid_parameter", params={"threshold": "1.5"}),
        Case("query parameter of the wrong type (threshold=abc)", dict(content=b">a\nACGT\n", **text), 422,
             "invalid_parameter", params={"threshold": "abc"}),
        Case("unknown output format (format=xml)", dict(content=b">a\nACGT\n", **text), 406, "unsupported_format",
             params={"format": "xml"}),
        Case("model name over 64 characters", dict(content=b">a\nACGT\n", **text), 422, "invalid_parameter",
             params={"model": "m" * 65}),
        Case("unknown model name", dict(content=b">a\nACGT\n", **text), 404, "model_not_found",
             params={"model": "nope"}),
        Case("path-like model name (../../etc/passwd)", dict(content=b">a\nACGT\n", **text), 404, "model_not_found",
             params={"model": "../../etc/passwd"}),
        Case("path-like model name (/etc/passwd)", dict(content=b">a\nACGT\n", **text), 404, "model_not_found",
             params={"model": "/etc/passwd"}),
        Case("path-like model name (promoter/../lncrna-localization/lncrna)", dict(content=b">a\nACGT\n", **text), 404,
             "model_not_found", params={"model": "promoter/../lncrna-localization/lncrna"}),
        Case("path-like lncRNA model name", dict(content=b">a\nACGT\n", **text), 404, "model_not_found",
             path=LNCRNA, params={"model": "../promoter/base"}),
    ]


CASES = cases()


def _settings(tmp_path: Path):
    return make_settings(small_models_dir(tmp_path, "base", lncrna=True), max_upload_bytes=LIMIT,
                         max_records=MAX_RECORDS, max_sequence_length=MAX_LENGTH)


def test_every_class_of_bad_input_gets_a_clear_answer(tmp_path):
    async def body():
        out = {}
        async with serving(_settings(tmp_path)) as client:
            reference = await client.post(PROMOTER, content=fasta(REFERENCE), headers=FASTA)
            for case in CASES:
                kwargs = {k: v for k, v in case.request.items() if k != "stream"}
                out[case.label] = await client.post(case.path, params=case.params, **kwargs)
            after = await client.post(PROMOTER, content=fasta(REFERENCE), headers=FASTA)
        return reference, out, after

    reference, out, after = run(body())
    assert reference.status_code == 200, reference.text
    ref = reference.json()["results"]
    assert after.json() == reference.json()  # nothing above changed what the service answers
    for case in CASES:
        resp = out[case.label]
        if case.code is None:
            assert resp.status_code == case.status == 200, (case.label, resp.text[:300])
            results = resp.json()["results"]
            assert results, case.label
            if case.same_as_reference:
                assert [r["id"] for r in results] == [r["id"] for r in ref], case.label
                for got, want in zip(results, ref, strict=True):
                    assert got["length"] == want["length"], case.label
                    assert got["probability"] == pytest.approx(want["probability"], abs=1e-6), case.label
            continue
        err = assert_error(resp, case.status, case.code, record_id=case.record_id, line=case.line)
        if case.line is not None and case.code == "invalid_fasta":  # FASTA errors also say it in words
            assert f"line {case.line}" in err["message"], (case.label, err)
        if case.label.startswith("path-like"):
            assert "root:" not in resp.text


def test_accepted_oddities_are_flagged(tmp_path):
    async def body():
        async with serving(_settings(tmp_path)) as client:
            rna = await client.post(PROMOTER, content=fasta([("rna", DNA.replace("T", "U"))]), headers=FASTA)
            iupac = await client.post(PROMOTER, content=fasta([("iupac", IUPAC)]), headers=FASTA)
            runs = await client.post(PROMOTER, content=fasta([("runs", DNA[:50] + "N" * 800 + DNA[:50]),
                                                              ("all_n", "N" * 1000)]), headers=FASTA)
            return rna.json()["results"], iupac.json()["results"], runs.json()["results"]

    rna, iupac, runs = run(body())
    assert rna[0]["flags"] == ["rna_input"]
    assert iupac[0]["ambiguous_bases"] == 11 and "ambiguous_bases" in iupac[0]["flags"]
    assert [r["ambiguous_bases"] for r in runs] == [800, 1000]
    assert [r["length"] for r in runs] == [900, 1000]
    # 800 of 900 ambiguous: scored and flagged; only N: not scored at all
    assert 0.0 <= runs[0]["probability"] <= 1.0 and "mostly_ambiguous" in runs[0]["flags"]
    assert runs[1]["probability"] is None and runs[1]["label"] is None
    assert runs[1]["flags"][:2] == ["ambiguous_bases", "no_informative_bases"]


def test_oversized_streams_are_cut_off_at_the_limit(tmp_path):
    """The service stops reading a body once it has passed the limit: of a streamed gigabyte it
    reads the limit plus at most one chunk, raw or multipart, with or without Content-Length."""
    async def body():
        out = {}
        async with serving(_settings(tmp_path)) as client:
            for name, make in (("raw", _gigabyte_line), ("multipart", _gigabyte_multipart)):
                req = make()
                stream = req.pop("stream")
                resp = await client.post(PROMOTER, **req)
                out[name] = (resp, stream.sent)
            # a JSON body is counted the same way
            head = b'{"sequences": [{"id": "a", "sequence": "'
            stream = Streamed(head, GIB)
            resp = await client.post(PROMOTER, content=stream, headers={"Content-Type": "application/json"})
            out["json"] = (resp, stream.sent)
            ok = await client.post(PROMOTER, content=fasta(REFERENCE), headers=FASTA)
        return out, ok

    out, ok = run(body())
    for name, (resp, sent) in out.items():
        assert_error(resp, 413, "payload_too_large")
        assert sent <= LIMIT + 2 * CHUNK, (name, sent)  # never the gigabyte
    assert ok.status_code == 200


def test_gzip_bomb_is_never_expanded_beyond_the_limit(monkeypatch, tmp_path):
    """The decompressed size limit stops the bomb after ``max_upload_bytes`` of output."""
    from service.contract import fasta as fasta_module

    produced = []
    original = fasta_module.StreamingGunzip.feed

    def feed(self, chunk):
        try:
            out = original(self, chunk)
        finally:
            produced.append(self.bytes_out)
        return out

    monkeypatch.setattr(fasta_module.StreamingGunzip, "feed", feed)

    async def body():
        async with serving(_settings(tmp_path)) as client:
            return await client.post(PROMOTER, content=BOMB, headers={**FASTA, "Content-Encoding": "gzip"})

    assert_error(run(body()), 413, "payload_too_large")
    assert produced and max(produced) <= LIMIT + 1


def test_the_documented_table_matches():
    """docs/robustness.md lists every case above with the status and code the test checks."""
    doc = (REPO / "docs" / "robustness.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d{3}", cells[-2]):
            rows[cells[0].replace("\\|", "|")] = (int(cells[-2]), cells[-1].strip("`"))
    for case in CASES:
        assert case.label in rows, f"docs/robustness.md has no row for {case.label!r}"
        assert rows[case.label] == (case.status, case.code or "—"), case.label
