"""Fuzzing: property-based tests of the normaliser and the FASTA reader, hostile bytes through the
whole HTTP stack, and schemathesis against the service's own OpenAPI schema.

* :func:`service.contract.sequence.normalize_sequence`: any text gives a normalised sequence or an
  :class:`InvalidSequence` naming the record and a position that really holds a bad character;
  normalising is idempotent and blind to case, U/T and whitespace.
* :func:`service.contract.fasta.read_fasta_bytes`: documents written with any line ending (LF, CRLF, CR),
  width and case read back as written (``tests/service/test_fasta.py`` has the any-bytes property).
* The HTTP stack: any bytes, sent raw, as a multipart upload or as JSON, get 200 or a 4xx in the
  error shape, never a 5xx, from a real uvicorn server.
* schemathesis: generated requests (schema-valid and schema-invalid) for every operation of
  ``/openapi.json``, with every check schemathesis has: no 5xx, documented status codes, content
  types and headers, responses that match their schemas, schema-invalid requests refused and
  schema-valid requests accepted (the schema states the server's real constraints).

The server runs in a thread of the test process on a loopback port, with small limits.
"""

from __future__ import annotations

import gzip
import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.v2 import offered_outputs
from service.contract.errors import DnabertError, InvalidSequence
from service.contract.fasta import parse_fasta, read_fasta_bytes
from service.contract.sequence import AMBIGUITY_CODES, normalize_sequence
from tests.service.robustness import (
    LNCRNA,
    PROMOTER,
    ThreadedServer,
    make_settings,
    needs_models,
    no_leak,
    small_models_dir,
)

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
HTTP_PROPERTY = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))
ALLOWED = set("ACGTUNRYSWKMBDHV")

# ------------------------------------------------------------------------------------------
# the normaliser

_nucleotide_text = st.text(alphabet="ACGTUNRYSWKMBDHVacgtunryswkmbdhv \t\r\n", max_size=300)
_any_text = st.one_of(st.text(max_size=200), _nucleotide_text,
                      st.builds(lambda a, b, c: a + b + c, _nucleotide_text, st.text(max_size=3), _nucleotide_text))


@PROPERTY
@given(raw=_any_text, record_id=st.text(min_size=1, max_size=20))
def test_normaliser_returns_a_sequence_or_names_the_record_and_position(raw, record_id):
    try:
        norm = normalize_sequence(raw, record_id)
    except InvalidSequence as exc:
        assert exc.code == "invalid_sequence" and exc.http_status == 422
        assert exc.record_id == record_id and repr(record_id) in exc.message
        compact = "".join(raw.split())
        if not compact:
            assert exc.position is None and "empty" in exc.message
        else:
            bad = compact[exc.position - 1]
            assert not (bad.isascii() and bad.upper() in ALLOWED), (bad, exc.message)  # e.g. "ſ".upper() == "S"
            assert all(c.upper() in ALLOWED for c in compact[: exc.position - 1])
            assert repr(bad) in exc.message
        return
    compact = "".join(raw.split())
    assert set(norm.sequence) <= set("ACGTN")
    assert len(norm) == len(compact) > 0
    assert norm.n_ambiguous == norm.sequence.count("N") == sum(c.upper() in AMBIGUITY_CODES for c in compact)
    for a, b in zip(compact.upper(), norm.sequence, strict=True):
        assert b == ({"U": "T"}.get(a) or ("N" if a in AMBIGUITY_CODES else a))


@PROPERTY
@given(raw=_nucleotide_text.filter(lambda t: t.strip()))
def test_normaliser_is_idempotent_and_blind_to_case_rna_and_whitespace(raw):
    norm = normalize_sequence(raw)
    assert normalize_sequence(norm.sequence) == norm
    assert normalize_sequence(raw.lower()) == norm == normalize_sequence(raw.upper())
    assert normalize_sequence(raw.replace("T", "U").replace("t", "u")) == norm
    spaced = " \n".join(raw[i:i + 7] for i in range(0, len(raw), 7))
    assert normalize_sequence(spaced) == norm


# ------------------------------------------------------------------------------------------
# the FASTA reader: round trips with every line ending

_ids = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-.|:/()[]"),
               min_size=1, max_size=24)
_seqs = st.text(alphabet="ACGTUNRYacgtunry", min_size=1, max_size=400)


@PROPERTY
@given(records=st.lists(st.tuples(_ids, _seqs), min_size=1, max_size=10, unique_by=lambda r: r[0]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), width=st.integers(1, 120), gz=st.booleans(),
       trailing=st.booleans(), bom=st.booleans())
def test_fasta_round_trips_with_any_line_ending(records, newline, width, gz, trailing, bom):
    lines = []
    for rid, seq in records:
        lines.append(f">{rid} description of {rid}")
        lines.extend(seq[i:i + width] for i in range(0, len(seq), width))
    text = newline.join(lines) + (newline if trailing else "")
    data = ("\ufeff" if bom else "").encode() + text.encode()
    if gz:
        data = gzip.compress(data)
    got = read_fasta_bytes(data, max_bytes=len(text.encode()) + 3, max_records=len(records),
                           max_sequence_length=max(len(s) for _, s in records))
    assert [(r.id, r.sequence) for r in got] == records
    assert [r.description for r in got] == [f"{rid} description of {rid}" for rid, _ in records]
    header_lines = [i + 1 for i, line in enumerate(lines) if line.startswith(">")]
    assert [r.line for r in got] == header_lines
    assert parse_fasta(text) == got


@PROPERTY
@given(data=st.binary(max_size=400), limit=st.integers(0, 500))
def test_any_bytes_are_records_or_a_domain_error(data, limit):
    try:
        records = read_fasta_bytes(data, max_bytes=limit, max_records=50, max_sequence_length=300)
    except DnabertError as exc:
        assert 400 <= exc.http_status < 500 and exc.message
        return
    assert records and all(r.id and r.sequence for r in records)


# ------------------------------------------------------------------------------------------
# a real server

LIMITS = dict(max_upload_bytes=16 * 1024, max_records=20, max_sequence_length=5000, max_queue=2000)
"""The test server's limits (the OpenAPI schema states them too)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    settings_ = make_settings(small_models_dir(tmp, "base", "cnn", lncrna=True), **LIMITS)
    with ThreadedServer(settings_) as srv:
        yield srv


_fasta_noise = st.lists(st.sampled_from(
    [">", ">a", ">b c", "\n", "\r\n", "\r", "ACGT", "acgu", "NNNN", "RYKM", "X", "1", "-", "*", ";c", " ", "\t",
     "\x00", "é", "\ufeff", "\u2028", "\x1f\x8b"]), max_size=60).map("".join)
_bodies = st.one_of(st.binary(max_size=2000), _fasta_noise.map(str.encode),
                    _fasta_noise.map(lambda t: gzip.compress(t.encode())),
                    st.binary(max_size=64).map(lambda b: gzip.compress(b)[: max(1, len(b))]))


@needs_models
@HTTP_PROPERTY
@given(body=_bodies, form=st.sampled_from(["raw", "gzip-header", "multipart", "json-raw", "json-field"]),
       path=st.sampled_from([PROMOTER, LNCRNA]))
def test_any_bytes_through_http_get_200_or_a_clean_4xx(server, body, form, path):
    if form == "raw":
        kwargs = dict(content=body, headers={"Content-Type": "text/plain"})
    elif form == "gzip-header":
        kwargs = dict(content=body, headers={"Content-Type": "text/x-fasta", "Content-Encoding": "gzip"})
    elif form == "multipart":
        kwargs = dict(files={"file": ("x.fa", body, "application/octet-stream")})
    elif form == "json-raw":
        kwargs = dict(content=body, headers={"Content-Type": "application/json"})
    else:
        text = body.decode("utf-8", errors="replace")
        kwargs = dict(json={"sequences": [{"id": "fuzz", "sequence": text}]})
    resp = httpx.post(server.base + path, timeout=60.0, **kwargs)
    assert resp.status_code == 200 or 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert resp.headers.get("x-request-id")
    if resp.status_code != 200:
        err = resp.json()["error"]
        assert err["code"] and err["message"] and err["request_id"] == resp.headers["x-request-id"]
        no_leak(resp.text)
    else:
        data = resp.json()
        assert data["count"] == len(data["results"]) > 0


# ------------------------------------------------------------------------------------------
# schemathesis

try:
    import schemathesis
    from schemathesis import checks as st_checks
    from schemathesis.generation import GenerationMode
except ImportError:  # the 'test' extra installs it
    schemathesis = None

needs_schemathesis = pytest.mark.skipif(schemathesis is None, reason="schemathesis is not installed")
SCHEMA_PROPERTY = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))

# What JSON Schema cannot state, taught to schemathesis here (each is documented in the schema's
# descriptions, and checked by the server):
#
# * FASTA is a grammar, not a JSON value: schema-valid FASTA bodies (raw, and the multipart
#   upload's `file`, plain or gzip) come from a FASTA strategy registered for their media types,
#   schemathesis's way of generating a body whose format a schema cannot describe. The schema
#   still states what it can (`FastaText`: the first non-blank character is `>` or `;`), and the
#   FASTA reader has its own properties above.
# * Rules across a JSON body's fields: record ids unique in the request, the whole body within
#   max_upload_bytes, and no record that looks like protein (the server refuses a record whose
#   ambiguity codes other than N are more than a quarter of it, and at least 20): generated JSON
#   bodies that break one of them (or have 20 such codes in a record) are left out by a hook, in
#   both modes.
# * An inference request (/v2/models/{model_name}/infer): its input's shape must hold as many
#   elements as its data, and the outputs it asks for must be the model's, each once (rules across
#   the body and the path): schema-valid cases are made so by a hook; bodies over the limits or
#   with a protein-like sequence are left out, as above.
# * 413 is how the server refuses input over a limit (records, bytes) that the schema states:
#   schemathesis's default statuses for a refused schema-invalid request leave it out.
_FASTA_ID = st.text(st.characters(categories=("L", "N", "P", "S"), exclude_characters=">;"), min_size=1, max_size=30)
_FASTA_BASES = st.text(alphabet="ACGTUNacgtun", min_size=1, max_size=300)
_CODES = set("RYSWKMBDHVryswkmbdhv")


@st.composite
def _fasta_bytes(draw) -> bytes:
    ids = draw(st.lists(_FASTA_ID, min_size=1, max_size=LIMITS["max_records"], unique=True))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    width = draw(st.integers(1, 120))
    lines = []
    for rid in ids:
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", ";a comment", "   "])))
        lines.append(f">{rid}" + draw(st.sampled_from(["", " a description", "\tx=1"])))
        seq = draw(_FASTA_BASES)
        lines.extend(seq[i:i + width] for i in range(0, len(seq), width))
    return (newline.join(lines) + draw(st.sampled_from(["", newline]))).encode()


def _register_fasta_media_types() -> None:
    fasta = _fasta_bytes()
    gzipped = fasta.map(gzip.compress)
    for media in ("text/plain", "text/x-fasta"):
        schemathesis.openapi.media_type(media, fasta)
    schemathesis.openapi.media_type("application/gzip", gzipped)
    schemathesis.openapi.media_type("application/octet-stream", st.one_of(fasta, gzipped))
    # /variants/promoter's 'vcf' part: a VCF is a grammar too (header, then tab-separated records)
    schemathesis.openapi.media_type("text/x-vcf", st.lists(_VCF_LINE, max_size=6).map(
        lambda lines: (_VCF_HEAD + "".join(lines)).encode()))


_VCF_HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
_VCF_LINE = st.tuples(
    st.text("ACGTchr0123456789_", min_size=1, max_size=8), st.integers(0, 10**6),
    st.text("ACGTN", min_size=1, max_size=5),
    st.lists(st.text("ACGT", min_size=1, max_size=5) | st.sampled_from(["<DEL>", "*"]), min_size=1, max_size=3),
).map(lambda t: f"{t[0]}\t{t[1]}\t.\t{t[2]}\t{','.join(t[3])}\t.\tPASS\t.\n")


def _one_record_per_picture(ctx, case):
    """/explain/*: png and svg show one record (422 one_record_per_image otherwise), a rule across
    the query and the body that a schema cannot state: such cases ask for JSON (the pictures are
    tested in tests/service/api/test_explain.py)."""
    query = case.query or {}
    if case.operation.path.startswith("/explain/") and str(query.get("format", "")).lower() in ("png", "svg"):
        case.query = {**query, "format": "json"}
    return case


def _consistent_inference_request(ctx, case):
    """/v2/models/{model_name}/infer: a tensor's shape holds as many elements as its data, and the
    outputs asked for are the model's, each once: rules across the body and the path that a schema
    cannot state, kept by the schema-valid cases (the flat data of shape [N], or [N, 1]). They ask
    for JSON outputs, as pictures are left out above: the binary ones are tested in test_v2.py."""
    body = case.body
    if (not case.operation.path.endswith("/infer") or case.meta is None
            or not case.meta.generation.mode.is_positive or not isinstance(body, dict)):
        return case
    body = json.loads(json.dumps(body))
    for tensor in body.get("inputs", []):
        tensor["data"] = [item[0] if isinstance(item, list) else item for item in tensor["data"]]
        tensor["shape"] = [len(tensor["data"]), 1][:len(tensor["shape"])]
    body.get("parameters", {}).pop("binary_data_output", None)
    for out in body.get("outputs", []):
        out.get("parameters", {}).pop("binary_data", None)
    if "outputs" in body:
        offered = offered_outputs(case.path_parameters["model_name"])
        names = [out["name"] for out in body["outputs"]]
        body["outputs"] = [out for i, out in enumerate(body["outputs"])
                           if out["name"] in offered and out["name"] not in names[:i]]
    case.body = body
    return case


def _possible_inference_body(body: dict) -> bool:
    """An inference request (/v2) within max_records and max_upload_bytes, with no sequence that
    looks like protein."""
    data = [item for t in body["inputs"] if isinstance(t, dict) and isinstance(t.get("data"), list)
            for item in t["data"]]
    sequences = [s for item in data for s in (item if isinstance(item, list) else [item]) if isinstance(s, str)]
    return (len(data) <= LIMITS["max_records"] and len(json.dumps(body).encode()) <= LIMITS["max_upload_bytes"]
            and not any(sum(c in _CODES for c in seq) >= 20 for seq in sequences))


def _possible_job(ctx, case):
    """POST /jobs: which body a kind takes (FASTA, a VCF and a reference for variants, labelled data
    and its own parameters for finetune) and which task it serves (scan: promoter only) are rules
    across the query and the body; schema-valid cases become a job the server can take (predict).
    The kinds are tested in test_jobs.py and test_finetune_jobs.py."""
    query = case.query or {}
    if case.operation.path != "/jobs" or case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if query.get("kind") in ("variants", "finetune") or (query.get("kind") == "scan" and query.get("task") != "promoter"):
        case.query = {**query, "kind": "predict"}
    return case


def _tokens_not_in_npy(ctx, case):
    """/embed: output=tokens gives arrays of different lengths, which npy cannot hold (406 naming
    npz): a rule across two query parameters, so such cases ask for npz."""
    query = case.query or {}
    if case.operation.path == "/embed" and query.get("output") == "tokens" and query.get("format") == "npy":
        case.query = {**query, "format": "npz"}
    return case


def _possible_json_body(ctx, body) -> bool:
    """False for a JSON body that breaks a rule across its fields (see above)."""
    if isinstance(body, dict) and "input" in body and "model" in body:  # /v1/embeddings: the same rules
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        body = {"sequences": [{"id": str(i), "sequence": x} for i, x in enumerate(inputs)], "_": body}
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        return _possible_inference_body(body)
    items = body.get("sequences") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return True
    if len(json.dumps(body).encode()) > LIMITS["max_upload_bytes"]:
        return False
    ids = [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
    if len(ids) != len(set(ids)):
        return False
    sequences = [item["sequence"] for item in items if isinstance(item, dict) and isinstance(item.get("sequence"), str)]
    return not any(sum(c in _CODES for c in seq) >= 20 for seq in sequences)


def _operations():
    if schemathesis is None:
        return None, [], []
    from service.api.app import create_app

    _register_fasta_media_types()
    spec = create_app(make_settings(**LIMITS)).openapi()
    refused = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": refused}}})
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(spec)), config=config)
    schema.hook("filter_body")(_possible_json_body)
    schema.hook("map_case")(_one_record_per_picture)
    schema.hook("map_case")(_tokens_not_in_npy)
    schema.hook("map_case")(_possible_job)
    schema.hook("map_case")(_consistent_inference_request)
    ops = [result.ok() for result in schema.get_all_operations()]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # operations without parameters or body have no schema-invalid requests
    params = [(op, m) for op in ops for m in modes if m == GenerationMode.POSITIVE or op.method.upper() == "POST"]
    return schema, ops, params


SCHEMA, OPERATIONS, PARAMS = _operations()


def _documented_examples(operation) -> list:
    """The request bodies the schema documents, as cases. (Not get_strategies_from_examples: it
    refuses FASTA examples, which are text, for media types with a registered strategy.)"""
    spec = SCHEMA.raw_schema
    content = spec["paths"][operation.path][operation.method.lower()].get("requestBody", {}).get("content", {})
    cases = [operation.Case(media_type=media, body=item["example"].encode())
             for media, item in content.items() if isinstance(item.get("example"), str)]
    if "application/json" in content and "{" not in operation.path:  # not for the v2 routes' path parameters
        cases += [operation.Case(media_type="application/json", body=example)
                  for example in spec["components"]["schemas"]["PredictRequest"].get("examples", [])]
    return cases


def _checks() -> list:
    """Every check schemathesis has (the stateful ones, which need recorded links, and
    max_response_time, which needs a limit, do nothing here)."""
    st_checks.load_all_checks()
    return list(st_checks.CHECKS.get_all())


@needs_schemathesis
def test_schemathesis_covers_every_operation():
    labels = {op.label for op in OPERATIONS}
    assert {"POST /predict/promoter", "POST /predict/lncrna-localization", "GET /models", "GET /healthz",
            "GET /readyz", "GET /metrics", "POST /v1/embeddings", "GET /v1/models", "GET /v1/models/{model_id}",
            "POST /embed"} <= labels
    names = {check.__name__ for check in _checks()}
    assert {"positive_data_acceptance", "negative_data_rejection", "response_schema_conformance",
            "unsupported_method", "missing_required_header"} <= names


@needs_models
@needs_schemathesis
@pytest.mark.parametrize(("operation", "mode"), PARAMS,
                         ids=[f"{re.sub(r'[^a-z]+', '-', op.label.lower()).strip('-')}-{m.value}" for op, m in PARAMS])
def test_schemathesis_against_the_openapi_schema(server, operation, mode):
    strategies = [operation.as_strategy(generation_mode=mode)]
    examples = _documented_examples(operation) if mode == GenerationMode.POSITIVE else []
    if examples:  # the documented examples (valid FASTA and JSON) reach 200
        strategies.append(st.sampled_from(examples))
    checks = _checks()
    statuses = []

    @SCHEMA_PROPERTY
    @given(case=st.one_of(*strategies))
    def check(case):
        resp = case.call(base_url=server.base, timeout=60)
        statuses.append(resp.status_code)
        assert resp.status_code < 500, (resp.status_code, resp.text[:300])
        case.validate_response(resp, checks=checks)
        if not resp.headers.get("content-type", [""])[0].startswith("application/x-np"):  # npy, npz: binary
            no_leak(resp.text)

    check()
    assert statuses
    if operation.method.upper() == "POST" and mode == GenerationMode.POSITIVE:
        assert {200, 202} & set(statuses)  # valid requests were served (jobs: accepted), not only refused
