"""Windows, strands, coordinates, regions and the track writers of the scan (pure logic, no
models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.contract.card import ModelCard
from service.contract.errors import InvalidSequence
from service.contract.fasta import FastaRecord
from service.contract.windows import (
    PROMOTER_WINDOW,
    REGION_LENGTH_MISMATCH,
    SHORTER_THAN_WINDOW,
    BedGraphWriter,
    BedWriter,
    Collected,
    JsonWriter,
    NdjsonWriter,
    NotScannable,
    RecordSummary,
    Region,
    RegionMerger,
    ScanMeta,
    ScanTooLarge,
    StepTrack,
    Windows,
    check_scan_size,
    n_counts,
    normalised,
    placement,
    reverse_complement,
    scan_record,
    strands_of,
    tile,
    window_chunks,
    window_length,
)
from tests.service.robustness import MODELS_DIR
from tests.service.track_formats import parse_bed6, parse_bedgraph


def windows(rows: list[tuple[int, int, str, float]]) -> Windows:
    start, end, strand, p = zip(*rows) if rows else ((), (), (), ())
    return Windows(np.array(start, dtype=np.int64), np.array(end, dtype=np.int64), np.array(strand, dtype="<U1"),
                   np.array(p, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# windows and coordinates


def test_tiling_steps_by_the_stride_and_aligns_the_last_window_to_the_end():
    assert tile(1000, 300, 50).tolist() == [*range(0, 701, 50)]
    assert tile(1030, 300, 50).tolist() == [*range(0, 701, 50), 730]
    assert tile(300, 300, 50).tolist() == [0]
    assert tile(120, 300, 50).tolist() == [0]  # shorter than a window: one window
    assert tile(1000, 300, 10_000).tolist() == [0, 700]
    with pytest.raises(ValueError):
        tile(1000, 300, 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 400), st.integers(1, 600))
def test_windows_cover_the_record_and_stay_inside_it(length, window, stride):
    starts = tile(length, window, stride)
    w = min(window, length)
    assert starts[0] == 0 and starts[-1] + w == length
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts)[:-1] == stride)
    if stride <= w:  # windows overlap or touch: every base is in one
        assert np.all(starts[1:] <= starts[:-1] + w)


def test_reverse_complement():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("acgRYKMBDHVSW") == "WSBDHVKMRYcgt"
    seq = "ACGTTGCANNRY"
    assert reverse_complement(reverse_complement(seq)) == seq


@pytest.mark.parametrize(("rid", "length", "expected"), [
    ("chr1:10001-20000", 10000, ("chr1", 10000, ())),
    ("chr1:1-300", 300, ("chr1", 0, ())),
    ("chr1:10001-20000", 500, ("chr1", 10000, (REGION_LENGTH_MISMATCH,))),
    ("HLA-A*01:01:01:01:5-10", 6, ("HLA-A*01:01:01:01", 4, ())),  # a contig name with colons
    ("chr1", 100, ("chr1", 0, ())),
    ("chr1:0-100", 101, ("chr1:0-100", 0, ())),  # 1-based: 0 is no position
    ("chr1:200-100", 101, ("chr1:200-100", 0, ())),
    ("chr1:10001-20000/rc", 10000, ("chr1:10001-20000/rc", 0, ())),  # samtools -i: not placed
    ("chr1:1,001-2,000", 1000, ("chr1:1,001-2,000", 0, ())),
])
def test_a_samtools_region_places_the_record(rid, length, expected):
    assert placement(rid, length) == expected


def test_a_short_record_is_one_window_flagged():
    record = scan_record("chrM:11-60", 50, 300)
    assert (record.chrom, record.offset, record.window, record.flags) == ("chrM", 10, 50, (SHORTER_THAN_WINDOW,))
    assert scan_record("x", 300, 300).flags == ()


def test_windows_with_too_many_n_are_skipped_and_counted():
    seq = "A" * 100 + "N" * 40 + "C" * 160
    assert n_counts(seq, np.array([0, 50, 100, 200]), 100).tolist() == [0, 40, 40, 0]
    chunks = list(window_chunks(seq, 100, 50, 0.1, size=2))
    assert [(c.tolist(), skipped) for c, skipped in chunks] == [([0], 1), ([150], 1), ([200], 0)]
    # at most the fraction: kept; a window of nothing but N: never scored
    assert [c.tolist() for c, _ in window_chunks("A" * 90 + "N" * 10, 100, 50, 0.1, size=8)] == [[0]]
    assert [(c.tolist(), s) for c, s in window_chunks("N" * 100, 100, 50, 1.0, size=8)] == [([], 1)]


def test_records_are_normalised_with_errors_at_their_line():
    assert normalised(FastaRecord("a", "a", "acgUryNN", 1)) == "ACGTNNNN"
    same = "ACGTN" * 3
    assert normalised(FastaRecord("b", "b", same, 1)) is same
    wrapped = FastaRecord("c", "c", "ACGT" * 30 + "AC-GT", 7, layout=(0, 8, 60))
    with pytest.raises(InvalidSequence, match="position 123") as caught:
        normalised(wrapped)
    assert caught.value.line == 10 and caught.value.record_id == "c"
    with pytest.raises(InvalidSequence, match="protein") as caught:
        normalised(FastaRecord("p", "p", "MKVHRSWYD" * 10, 4))
    assert caught.value.line == 4


def test_strand_names():
    assert strands_of("both") == ("+", "-")
    assert strands_of("+") == strands_of("plus") == strands_of(" ") == ("+",)  # ' ': '+' decoded from a URL
    assert strands_of("-") == strands_of("MINUS") == ("-",)
    with pytest.raises(Exception, match="strand must be"):
        strands_of("forward")


def test_the_scan_limit_counts_every_nucleotide():
    records = [FastaRecord("a", "a", "A" * 600, 1), FastaRecord("b", "b", "C" * 400, 3)]
    check_scan_size(records, 1000)
    with pytest.raises(ScanTooLarge, match="1001 nucleotides, over the limit of 1000") as err:
        check_scan_size([*records, FastaRecord("c", "c", "G", 5)], 1000)
    assert err.value.http_status == 413


def test_the_window_length_is_read_from_the_card():
    card = ModelCard.load(MODELS_DIR / "promoter" / "cnn_bilstm_max")
    assert window_length(card) == PROMOTER_WINDOW == 300  # its data set: promoter_300bp
    stated = card.model_copy(deep=True)
    stated.training.data = {**card.training.data, "window": 251}
    assert window_length(stated) == 251
    unnamed = card.model_copy(deep=True)
    unnamed.training.data = None
    assert window_length(unnamed) == 300
    lncrna = ModelCard.load(MODELS_DIR / "lncrna-localization" / "lncrna")
    with pytest.raises(NotScannable, match="only promoter models can scan"):
        window_length(lncrna)


# --------------------------------------------------------------------------------------------
# regions and tracks


def test_regions_merge_overlapping_windows_over_the_threshold_per_strand():
    merger = RegionMerger(threshold=0.5, min_windows=1)
    merger.add(windows([(0, 300, "+", 0.9), (0, 300, "-", 0.2), (50, 350, "+", 0.6), (50, 350, "-", 0.7),
                        (100, 400, "+", 0.1), (100, 400, "-", 0.5)]))
    merger.add(windows([(150, 450, "+", 0.8), (500, 800, "+", 0.55), (800, 1100, "+", 0.7)]))
    regions = merger.finish()
    assert regions == [
        Region(0, 450, "+", 0.9, pytest.approx((0.9 + 0.6 + 0.8) / 3), 3),  # the low window between: still one
        Region(50, 400, "-", 0.7, pytest.approx(0.6), 2),
        Region(500, 1100, "+", 0.7, pytest.approx(0.625), 2),  # touching windows merge
    ]
    strict = RegionMerger(threshold=0.5, min_windows=3)
    strict.add(windows([(0, 300, "+", 0.9), (50, 350, "+", 0.6), (150, 450, "+", 0.8), (1000, 1300, "-", 1.0)]))
    assert [(r.start, r.end, r.windows) for r in strict.finish()] == [(0, 450, 3)]
    assert RegionMerger(0.5).finish() == []


def test_bedgraph_intervals_tile_the_stride_around_each_centre_without_overlap():
    track = StepTrack(stride=50)
    lo, hi, _ = track.intervals(windows([(s, s + 300, "+", 0.1) for s in (0, 50, 100)]))
    assert list(zip(lo.tolist(), hi.tolist())) == [(125, 175), (175, 225), (225, 275)]
    # the next chunk continues; the last window, aligned to the end 30 bp after, is cut
    lo, hi, _ = track.intervals(windows([(150, 450, "+", 0.1), (180, 480, "+", 0.2)]))
    assert list(zip(lo.tolist(), hi.tolist())) == [(275, 325), (325, 355)]
    # the other strand has its own track; a stride over the window stays within the window
    wide = StepTrack(stride=500)
    lo, hi, _ = wide.intervals(windows([(0, 300, "-", 0.1), (500, 800, "-", 0.1)]))
    assert list(zip(lo.tolist(), hi.tolist())) == [(0, 300), (500, 800)]
    lo, hi, _ = StepTrack(stride=1).intervals(windows([(0, 300, "+", 0.1), (1, 301, "+", 0.1)]))
    assert list(zip(lo.tolist(), hi.tolist())) == [(150, 151), (151, 152)]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 400), st.integers(1, 500), st.integers(1, 4))
def test_bedgraph_intervals_never_overlap_and_stay_in_their_window(length, window, stride, chunks):
    starts = tile(length, window, stride)
    w = min(window, length)
    track = StepTrack(stride)
    spans = []
    for part in np.array_split(starts, chunks):
        if len(part):
            lo, hi, _ = track.intervals(windows([(s, s + w, "+", 0.5) for s in part.tolist()]))
            spans += list(zip(lo.tolist(), hi.tolist(), part.tolist()))
    previous = 0
    for lo, hi, s in spans:
        centre = s + w // 2
        assert s <= lo < hi <= s + w and centre < hi
        assert lo <= centre or lo == previous  # cut where the window before ended (the last one)
        assert lo >= previous
        previous = hi


META = ScanMeta("cnn_bilstm_max", 300, 50, ("+", "-"), 0.5, 1, 0.1)


def _written(writer) -> str:
    """A two-record scan through ``writer``, as a caller writes it (now, then later)."""
    out = Collected()
    a = scan_record("chr1:1001-1400", 400, 300)
    b = scan_record("tiny", 20, 300)
    out.add(writer.head())
    out.add(writer.start(a))
    out.add(writer.windows(a, windows([(1000, 1300, "+", 0.25), (1000, 1300, "-", 0.75)])))
    out.add(writer.windows(a, windows([(1050, 1350, "+", 0.5), (1050, 1350, "-", 0.875)])))
    out.add(writer.windows(a, windows([(1100, 1400, "+", 0.125), (1100, 1400, "-", 0.0625)])))
    out.add(writer.finish(RecordSummary(a, 6, 0, [Region(1000, 1350, "-", 0.875, 0.8125, 2),
                                                  Region(1050, 1350, "+", 0.5, 0.5, 1)])))
    out.add(writer.start(b))
    out.add(writer.windows(b, windows([(0, 20, "+", 0.3), (0, 20, "-", 0.4)])))
    out.add(writer.finish(RecordSummary(b, 2, 4, [])))
    out.add(writer.tail(2))
    return out.text()


def test_json_writer():
    doc = json.loads(_written(JsonWriter(META)))
    assert doc["model"] == "cnn_bilstm_max" and doc["strand"] == "both" and doc["count"] == 2
    assert doc["coordinates"] == "0-based, half-open"
    first, second = doc["results"]
    assert (first["id"], first["chrom"], first["offset"], first["length"]) == ("chr1:1001-1400", "chr1", 1000, 400)
    assert [(w["start"], w["strand"], w["probability"]) for w in first["windows"]] == [
        (1000, "+", 0.25), (1000, "-", 0.75), (1050, "+", 0.5), (1050, "-", 0.875), (1100, "+", 0.125),
        (1100, "-", 0.0625)]
    assert first["regions"][0] == {"start": 1000, "end": 1350, "strand": "-", "score": 0.875, "mean": 0.8125,
                                    "windows": 2}
    assert (second["windows_scored"], second["skipped_windows"], second["flags"]) == (2, 4, [SHORTER_THAN_WINDOW])
    empty = JsonWriter(META)
    text = "".join(t[0] for t in (empty.head(), empty.start(scan_record("x", 5, 300)),
                                  empty.finish(RecordSummary(scan_record("x", 5, 300), 0, 2, [])), empty.tail(1)))
    assert json.loads(text)["results"][0]["windows"] == []


def test_ndjson_writer():
    lines = [json.loads(line) for line in _written(NdjsonWriter(META)).splitlines()]
    assert [x["type"] for x in lines] == ["scan", *["window"] * 6, "record", "window", "window", "record", "done"]
    assert lines[1] == {"type": "window", "id": "chr1:1001-1400", "chrom": "chr1", "start": 1000, "end": 1300,
                        "strand": "+", "probability": 0.25}
    assert lines[7]["regions"][1]["strand"] == "+" and lines[-1] == {"type": "done", "count": 2}


def test_bedgraph_writer_one_track_per_strand():
    tracks = parse_bedgraph(_written(BedGraphWriter(META)))
    assert [t["name"] for t in tracks] == ["promoter_plus", "promoter_minus"]
    assert tracks[0]["viewLimits"] == "0:1" and "cnn_bilstm_max" in tracks[0]["description"]
    assert tracks[0]["rows"] == [("chr1", 1125, 1175, 0.25), ("chr1", 1175, 1225, 0.5),
                                 ("chr1", 1225, 1275, 0.125), ("tiny", 0, 20, 0.3)]
    assert [r[3] for r in tracks[1]["rows"]] == [0.75, 0.875, 0.0625, 0.4]
    one = parse_bedgraph(_written(BedGraphWriter(ScanMeta("m", 300, 50, ("-",), 0.5, 1, 0.1))))
    assert [t["name"] for t in one] == ["promoter_minus"] and len(one[0]["rows"]) == 4


def test_bed_writer_regions_with_strand_and_score():
    header, rows = parse_bed6(_written(BedWriter(META)))
    assert "useScore=1" in header and "P >= 0.5" in header
    assert rows == [("chr1", 1000, 1350, "chr1:1001-1400_1", 875, "-"), ("chr1", 1050, 1350, "chr1:1001-1400_2", 500, "+")]
