"""``POST /scan/promoter``: windows that agree with ``/predict``, genome coordinates, strands,
regions, the four output formats and the limits (through the whole HTTP stack)."""

from __future__ import annotations

import asyncio
import gzip
import json

import numpy as np
import pytest

from service.api.scan import ScanResponse
from service.contract.windows import reverse_complement
from tests.service.robustness import (
    FASTA,
    HAS_LNCRNA,
    MODELS_DIR,
    assert_error,
    fasta,
    make_settings,
    needs_models,
    run,
    serving,
)
from tests.service.track_formats import parse_bed6, parse_bedgraph

pytestmark = needs_models
SCAN = "/scan/promoter"
PREDICT = "/predict/promoter"
MODEL = "cnn_bilstm_max"

# A promoter of the hearing-loss test set (label 1) that cnn_bilstm_max scores 0.87, while it
# scores its reverse complement 0.08: planted reversed, it is a promoter on the minus strand only.
PROMOTER_SEQ = (
    "CCTTTAAATTACGATAGTACACACACAAAAACCTTATTTATCTAATTGCCTTTCGTTGGCACATAAAGACAAAGATCGTTTGCAACATAATCGCGTTCTG"
    "ATAGGTTTGACCCTCTCTAGTCTTCGTAGAAGGTGGCCAAGGTTTCCGTTACCCCGGCGTCCCTCGGGCACCGCGGAAACGAAACTCCATCAGGCTCCGC"
    "CCCACGGTCTGCGGAGTGAGCCAATCAGGGCACAGCCTGCGTTGACCGCGTGCCGGGTGTCATGGCGGCCTGCAGGTACTGCTGCTCGTGCCTCCGGCTC")


def random_dna(length: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(np.array(list("ACGT"))[rng.integers(0, 4, length)])


def _settings(**overrides):
    return make_settings(MODELS_DIR, default_promoter_model=MODEL, **overrides)


async def _predicted(client, sequences: list[str], model: str) -> list[float]:
    body = {"sequences": [{"id": f"w{i}", "sequence": s} for i, s in enumerate(sequences)]}
    resp = await client.post(PREDICT, params={"model": model}, json=body)
    assert resp.status_code == 200, resp.text[:300]
    return [r["probability"] for r in resp.json()["results"]]


def _window_sequence(record: dict, sequences: dict[str, str], window: dict) -> str:
    seq = sequences[record["id"]][window["start"] - record["offset"]:window["end"] - record["offset"]]
    return seq if window["strand"] == "+" else reverse_complement(seq)


@pytest.mark.parametrize("model", [MODEL, "all"])
def test_every_window_is_what_predict_answers_for_its_sequence(model):
    """Each window's probability equals /predict/promoter on the window's sequence (on '-' its
    reverse complement), to 1e-6; also with model=all (the mean of the five variants)."""
    sequences = {"chr2:5001-5700": random_dna(700, 1),
                 "locus": random_dna(330, 2).lower() + "NNRY" + random_dna(66, 3),
                 "tiny": "ACGTTGCAACGTNNACGUUGCA"}

    async def body():
        async with serving(_settings()) as client:
            resp = await client.post(SCAN, params={"model": model, "stride": 100},
                                     content=fasta(list(sequences.items())), headers=FASTA)
            assert resp.status_code == 200, resp.text[:300]
            answer = resp.json()
            normalised = {k: v.upper().replace("U", "T").replace("R", "N").replace("Y", "N")
                          for k, v in sequences.items()}
            wanted = [(r, w) for r in answer["results"] for w in r["windows"]]
            expected = await _predicted(client, [_window_sequence(r, normalised, w) for r, w in wanted], model)
            return answer, [w["probability"] for _, w in wanted], expected

    answer, got, expected = run(body())
    ScanResponse.model_validate(answer)
    assert answer["model"] == model and answer["window"] == 300 and answer["count"] == 3
    assert len(got) == (5 + 2 + 1) * 2
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_genome_coordinates_with_and_without_a_samtools_region():
    """``>chr1:10001-20000`` (1-based inclusive) puts the first window at 10000 (0-based); other
    ids start at 0; the last window is aligned to the record's end; both strands share them."""
    seq = random_dna(1030, 4)

    async def body():
        async with serving(_settings()) as client:
            resp = await client.post(SCAN, params={"stride": 50},
                                     content=fasta([("chr1:10001-11030", seq), ("plain", seq),
                                                    ("chrX:101-200", seq[:250])]), headers=FASTA)
            return resp.json()

    placed, plain, mismatched = run(body())["results"]
    assert (placed["chrom"], placed["offset"], plain["chrom"], plain["offset"]) == ("chr1", 10000, "plain", 0)
    starts = [w["start"] for w in plain["windows"] if w["strand"] == "+"]
    assert starts == [*range(0, 701, 50), 730] and len(plain["windows"]) == 2 * len(starts)
    assert [w["start"] - 10000 for w in placed["windows"]] == [w["start"] for w in plain["windows"]]
    assert all(w["end"] - w["start"] == 300 for w in placed["windows"])
    assert placed["windows"][-1]["end"] == 11030 and plain["windows"][-1]["end"] == 1030
    np.testing.assert_allclose([w["probability"] for w in placed["windows"]],
                               [w["probability"] for w in plain["windows"]], atol=1e-6)
    assert placed["flags"] == plain["flags"] == []
    # a region that is not the record's length: placed at its start, flagged; a short record: one window
    assert mismatched["flags"] == ["region_length_mismatch", "shorter_than_window"]
    assert [(w["start"], w["end"]) for w in mismatched["windows"]] == [(100, 350), (100, 350)]


def test_a_promoter_planted_on_the_minus_strand_is_found_there():
    """The reverse complement of a strong promoter inside random sequence: a '-' region covers it
    and no '+' region covers it."""
    background = random_dna(3000, 7)
    at = 1500
    seq = background[:at] + reverse_complement(PROMOTER_SEQ) + background[at + 300:]

    async def body():
        async with serving(_settings()) as client:
            resp = await client.post(SCAN, params={"model": MODEL, "format": "json"},
                                     content=fasta([("chr9:1-3000", seq)]), headers=FASTA)
            assert resp.status_code == 200, resp.text[:300]
            return resp.json()["results"][0]

    result = run(body())
    hits = {(w["start"], w["strand"]): w["probability"] for w in result["windows"]}
    assert hits[(at, "-")] > 0.8 > 0.1 > hits[(at, "+")]
    minus = [r for r in result["regions"] if r["strand"] == "-" and r["start"] < at + 300 and r["end"] > at]
    # windows that overlap the planted sequence only in part may score high on '+' (its flank and
    # the random background make something new there); the planted window itself may not
    plus = [r for r in result["regions"] if r["strand"] == "+" and r["start"] <= at and r["end"] >= at + 300]
    assert len(minus) == 1 and not plus, result["regions"]
    region = minus[0]
    assert region["start"] <= at and region["end"] >= at + 300 and region["score"] == pytest.approx(
        max(p for (s, strand), p in hits.items() if strand == "-" and region["start"] <= s < region["end"]))
    assert region["score"] >= region["mean"] >= 0.5 and region["windows"] >= 1


def test_bedgraph_and_bed_follow_their_specs_and_carry_the_json_numbers(tmp_path):
    """bedGraph: a track line per strand, 4 columns, 0-based half-open, no overlap within a track
    (read back through pyBigWig); BED6: the regions with their strand and a 0-1000 score."""
    pyBigWig = pytest.importorskip("pyBigWig")
    seq = random_dna(1500, 8)
    seq = seq[:600] + reverse_complement(PROMOTER_SEQ) + seq[900:]
    body_ = fasta([("chr3:1001-2500", seq), ("other", random_dna(420, 9))])

    async def body():
        async with serving(_settings()) as client:
            out = {}
            for fmt in ("json", "bedgraph", "bed"):
                out[fmt] = await client.post(SCAN, params={"format": fmt, "stride": 40}, content=body_,
                                             headers=FASTA)
            accepted = await client.post(SCAN, params={"stride": 40}, content=body_,
                                         headers={**FASTA, "Accept": "text/x-bed"})
            return out, accepted

    out, accepted = run(body())
    assert out["bedgraph"].headers["content-type"].startswith("text/x-bedgraph")
    assert accepted.text == out["bed"].text and accepted.headers["content-type"].startswith("text/x-bed")
    results = out["json"].json()["results"]
    tracks = parse_bedgraph(out["bedgraph"].text)
    assert [t["name"] for t in tracks] == ["promoter_plus", "promoter_minus"]
    for track, strand in zip(tracks, "+-"):
        windows = [(r["chrom"], w) for r in results for w in r["windows"] if w["strand"] == strand]
        assert len(track["rows"]) == len(windows)
        for (chrom, start, end, value), (wchrom, w) in zip(track["rows"], windows):
            assert chrom == wchrom and w["start"] <= start < end <= w["end"]
            assert value == pytest.approx(w["probability"], abs=1e-6)
        # a bigWig written from the track reads back the same values
        path = str(tmp_path / f"{track['name']}.bw")
        sizes = [(r["chrom"], r["offset"] + r["length"]) for r in results]
        bw = pyBigWig.open(path, "w")
        bw.addHeader(sizes)
        rows = track["rows"]
        bw.addEntries([r[0] for r in rows], [r[1] for r in rows], ends=[r[2] for r in rows],
                      values=[r[3] for r in rows])
        bw.close()
        bw = pyBigWig.open(path)
        for chrom, start, end, value in rows:
            assert bw.values(chrom, start, end) == pytest.approx([value] * (end - start), abs=1e-6)
        bw.close()
    header, regions = parse_bed6(out["bed"].text)
    assert "useScore=1" in header
    expected = [(r["chrom"], g["start"], g["end"], g["strand"], min(1000, round(1000 * g["score"])))
                for r in results for g in r["regions"]]
    assert [(c, s, e, strand, score) for c, s, e, _, score, strand in regions] == expected
    assert any(strand == "-" and s <= 1600 and e >= 1900 for c, s, e, _, _, strand in regions)


async def _asgi_messages(app, path: str, query: str, body: bytes, gone: asyncio.Event | None = None) -> list[dict]:
    """What the app sends for one request, message by message (httpx's ASGI transport would
    gather a streamed body into one); the client goes away once ``gone`` is set."""
    sent, delivered, done = [], False, gone or asyncio.Event()

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the client stays connected until then
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"test"), (b"content-type", b"text/plain")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await app(scope, receive, send)
    done.set()
    return sent


def test_ndjson_streams_the_windows_as_they_are_scored():
    """The NDJSON answer goes out in pieces as the chunks of windows are scored (a small queue
    makes the chunks small), with the numbers of the JSON answer."""
    seq = random_dna(3000, 10)

    async def body():
        async with serving(_settings(max_queue=200)) as client:
            reference = (await client.post(SCAN, params={"stride": 25}, content=fasta([("a", seq)]),
                                           headers=FASTA)).json()
            messages = await _asgi_messages(client.app, SCAN, "format=ndjson&stride=25", fasta([("a", seq)]))
            return reference, messages

    reference, messages = run(body())
    start = messages[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert dict(start["headers"])[b"content-type"].startswith(b"application/x-ndjson")
    pieces = [m["body"].decode() for m in messages[1:] if m.get("body")]
    assert sum('"type":"window"' in p for p in pieces) > 3  # the windows came in pieces, as scored
    lines = [json.loads(line) for line in "".join(pieces).splitlines()]
    assert lines[0]["type"] == "scan" and lines[-1] == {"type": "done", "count": 1}
    windows = [x for x in lines if x["type"] == "window"]
    record = [x for x in lines if x["type"] == "record"]
    expected = reference["results"][0]
    assert [(w["start"], w["strand"]) for w in windows] == [(w["start"], w["strand"]) for w in expected["windows"]]
    np.testing.assert_allclose([w["probability"] for w in windows],
                               [w["probability"] for w in expected["windows"]], atol=1e-6)
    assert record[0]["regions"] == expected["regions"] and record[0]["windows_scored"] == len(windows)


def test_a_client_gone_mid_scan_leaves_no_work_behind():
    """JSON or NDJSON, a client that goes away half-way through a scan has its queued windows
    withdrawn: the batcher is idle at once, long before the scan would have ended."""
    seq = random_dna(200_000, 14)

    async def body():
        async with serving(_settings()) as client:
            batcher = client.app.state.service.models["promoter", MODEL].batcher
            out = {}
            for fmt in ("json", "ndjson"):
                gone = asyncio.Event()
                asyncio.get_running_loop().call_later(0.5, gone.set)
                start = asyncio.get_running_loop().time()
                sent = await _asgi_messages(client.app, SCAN, f"format={fmt}&model={MODEL}", fasta([("big", seq)]),
                                            gone)
                took = asyncio.get_running_loop().time() - start
                await asyncio.sleep(0.2)
                out[fmt] = (took, batcher.queue_depth, sent)
            return out

    out = run(body())
    for fmt, (took, depth, _) in out.items():
        assert depth == 0 and took < 2.5, (fmt, took, depth)  # 8,000 windows: over 4 s on 2 cores
    assert not any(m.get("body") and b'"type":"done"' in m["body"] for m in out["ndjson"][2])


def test_n_rich_windows_are_skipped_and_counted_and_one_strand_can_be_asked():
    seq = random_dna(600, 11) + "N" * 100 + random_dna(600, 12)

    async def body():
        async with serving(_settings()) as client:
            out = {}
            for strand in ("both", "+", "%2B", "-", "minus"):
                resp = await client.post(f"{SCAN}?strand={strand}&stride=50&max_n_fraction=0.1",
                                         content=fasta([("n", seq)]), headers=FASTA)
                assert resp.status_code == 200, resp.text
                out[strand] = resp.json()
            return out

    out = run(body())
    both = out["both"]["results"][0]
    starts = [*range(0, 1001, 50)]
    skipped = [s for s in starts if sum(600 <= i < 700 for i in range(s, s + 300)) > 30]
    assert both["skipped_windows"] == 2 * len(skipped)
    assert sorted({w["start"] for w in both["windows"]}) == [s for s in starts if s not in skipped]
    assert out["+"]["strand"] == out["%2B"]["strand"] == "+"
    for strand, name in (("+", "+"), ("-", "-"), ("minus", "-")):
        result = out[strand]["results"][0]
        assert {w["strand"] for w in result["windows"]} == {name}
        assert result["skipped_windows"] == len(skipped)
        mine = [(w["start"], w["probability"]) for w in both["windows"] if w["strand"] == name]
        assert [w["start"] for w in result["windows"]] == [s for s, _ in mine]
        np.testing.assert_allclose([w["probability"] for w in result["windows"]], [p for _, p in mine], atol=1e-6)


def test_refusals_name_the_problem():
    seq = random_dna(400, 13)

    async def body():
        async with serving(_settings(max_scan_bases=1000)) as client:
            post = client.post
            return {
                "lncrna": await post(SCAN, params={"model": "lncrna"}, content=fasta([("a", seq)]), headers=FASTA),
                "unknown model": await post(SCAN, params={"model": "nope"}, content=fasta([("a", seq)]),
                                            headers=FASTA),
                "strand": await post(SCAN, params={"strand": "up"}, content=fasta([("a", seq)]), headers=FASTA),
                "stride": await post(SCAN, params={"stride": 0}, content=fasta([("a", seq)]), headers=FASTA),
                "typo": await post(SCAN, params={"strides": 10}, content=fasta([("a", seq)]), headers=FASTA),
                "format": await post(SCAN, params={"format": "csv"}, content=fasta([("a", seq)]), headers=FASTA),
                "total": await post(SCAN, content=fasta([("a", seq), ("b", seq), ("c", seq)]), headers=FASTA),
                "one record": await post(SCAN, content=gzip.compress(fasta([("big", seq * 3)])), headers=FASTA),
                "character": await post(SCAN, content=fasta([("ok", seq), ("bad", seq[:130] + "X" + seq[131:])]),
                                        headers=FASTA),
                "metrics": await client.get("/metrics"),
            }

    out = run(body())
    if HAS_LNCRNA:
        err = assert_error(out["lncrna"], 422, "not_scannable")
        assert "lncRNA" in err["message"] and "windows" in err["message"]
    assert_error(out["unknown model"], 404, "model_not_found")
    assert "strand" in assert_error(out["strand"], 422, "invalid_parameter")["message"]
    assert_error(out["stride"], 422, "invalid_parameter")
    assert "'strides'" in assert_error(out["typo"], 422, "invalid_parameter")["message"]
    assert "ndjson" in assert_error(out["format"], 406, "unsupported_format")["message"]
    for name in ("total", "one record"):
        message = assert_error(out[name], 413, "payload_too_large")["message"]
        assert "1000" in message and "DNABERT_MAX_SCAN_BASES" in message
    assert_error(out["character"], 422, "invalid_sequence", record_id="bad", line=12)
    metrics = out["metrics"].text
    assert 'endpoint="scan/promoter"' in metrics and 'status="413"' in metrics
