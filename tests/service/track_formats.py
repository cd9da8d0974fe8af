"""Strict readers of the track formats the scan writes, after the UCSC specifications
(https://genome.ucsc.edu/FAQ/FAQformat.html): what a genome browser or bedtools would refuse,
they refuse too. Not a test module."""

from __future__ import annotations

import re

_TRACK = re.compile(r'^track(?: [A-Za-z]+=(?:"[^"]*"|[^ "]+))+$')


def _track_line(line: str) -> dict[str, str]:
    assert _TRACK.match(line), line
    return {k: v.strip('"') for k, v in re.findall(r'([A-Za-z]+)=("[^"]*"|[^ "]+)', line)}


def _coordinates(fields: list[str], line: str) -> tuple[str, int, int]:
    chrom, start, end = fields[0], fields[1], fields[2]
    assert chrom and not any(c.isspace() for c in chrom), line
    assert start.isdigit() and end.isdigit(), line
    s, e = int(start), int(end)
    assert 0 <= s < e, f"not 0-based half-open with start < end: {line}"
    return chrom, s, e


def parse_bedgraph(text: str) -> list[dict]:
    """Tracks of a bedGraph file: ``track type=bedGraph ...`` then ``chrom start end value``
    rows (4 tab-separated columns, integer 0-based half-open coordinates, a finite number),
    sorted and not overlapping within a chromosome of a track."""
    tracks: list[dict] = []
    for line in text.splitlines():
        if line.startswith("track"):
            attrs = _track_line(line)
            assert attrs.get("type") == "bedGraph", line
            tracks.append({**attrs, "rows": []})
            continue
        assert tracks, f"data before the track line: {line}"
        fields = line.split("\t")
        assert len(fields) == 4, line
        chrom, s, e = _coordinates(fields, line)
        value = float(fields[3])
        assert value == value and abs(value) != float("inf"), line
        rows = tracks[-1]["rows"]
        if rows and rows[-1][0] == chrom:
            assert s >= rows[-1][2], f"overlaps the row before: {line}"
        tracks[-1]["rows"].append((chrom, s, e, value))
    assert text.endswith("\n")
    return tracks


def parse_bed6(text: str) -> tuple[str, list[tuple[str, int, int, str, int, str]]]:
    """(track line, rows) of a BED6 file: ``chrom start end name score strand``, tab-separated,
    score an integer 0-1000, strand ``+``, ``-`` or ``.``."""
    lines = text.splitlines()
    header = lines[0]
    _track_line(header)
    rows = []
    for line in lines[1:]:
        fields = line.split("\t")
        assert len(fields) == 6, line
        chrom, s, e = _coordinates(fields, line)
        name, score, strand = fields[3], fields[4], fields[5]
        assert name and " " not in name, line
        assert score.isdigit() and 0 <= int(score) <= 1000, line
        assert strand in ("+", "-", "."), line
        rows.append((chrom, s, e, name, int(score), strand))
    assert text.endswith("\n")
    return header, rows
