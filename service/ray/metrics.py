"""``GET /metrics`` over several replicas: their Prometheus texts merged into one.

Every replica keeps its own registry (counters, histograms, gauges of its batchers). Behind the
Serve proxy a scrape reaches one replica, so the app's own ``/metrics`` would answer a different
replica's counters each time. On Ray each replica reports its text to one small deployment
every few seconds, and ``/metrics`` answers all of them merged: one ``# HELP``/``# TYPE`` per
metric family, then the samples of every replica, each labelled ``replica="<replica id>"`` (sum
over that label in PromQL for the service's totals). A replica that has not reported for
:data:`STALE_AFTER_S` seconds (stopped, killed) is left out.
"""

from __future__ import annotations

import re
import time

REPORT_EVERY_S = 5.0
"""How often a replica reports its metrics."""
STALE_AFTER_S = 4 * REPORT_EVERY_S
"""A replica that has not reported for this long is left out of the merged text."""
LABEL = "replica"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_sample(line: str, replica: str) -> str:
    """One sample line with ``replica="<replica>"`` added to its labels."""
    match = _NAME.match(line)
    if match is None:
        raise ValueError(f"not a Prometheus sample line: {line[:80]!r}")
    name, rest = match.group(0), line[match.end():]
    label = f'{LABEL}="{_escape(replica)}"'
    if rest.startswith("{"):
        return f"{name}{{{label}{'' if rest.startswith('{}') else ','}{rest[1:]}"
    return f"{name}{{{label}}}{rest}"


def families(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(family name, its ``#`` lines, its sample lines) in the order of the text."""
    out: list[tuple[str, list[str], list[str]]] = []
    index: dict[str, int] = {}
    current: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if name not in index:
                    index[name] = len(out)
                    out.append((name, [], []))
                current = index[name]
                out[current][1].append(line)
            continue
        if current is None:  # a sample before any family: a family of its own, without comments
            match = _NAME.match(line)
            name = match.group(0) if match else line
            index.setdefault(name, len(out))
            if index[name] == len(out):
                out.append((name, [], []))
            current = index[name]
        out[current][2].append(line)
    return out


def merge(texts: dict[str, str]) -> str:
    """The texts of several replicas (replica id -> Prometheus text) as one exposition."""
    order: list[str] = []
    comments: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for replica in sorted(texts):
        for name, notes, lines in families(texts[replica]):
            if name not in comments:
                order.append(name)
                comments[name] = notes
                samples[name] = []
            elif not comments[name] and notes:
                comments[name] = notes
            samples[name].extend(label_sample(line, replica) for line in lines)
    out: list[str] = []
    for name in order:
        out.extend(comments[name])
        out.extend(samples[name])
    return "\n".join(out) + "\n" if out else ""


class Board:
    """The latest text of every replica (what the metrics deployment keeps)."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S):
        self.stale_after_s = stale_after_s
        self._texts: dict[str, tuple[float, str]] = {}

    def report(self, replica: str, text: str, now: float | None = None) -> None:
        self._texts[replica] = (time.monotonic() if now is None else now, text)

    def forget(self, replica: str) -> None:
        self._texts.pop(replica, None)

    def live(self, now: float | None = None) -> dict[str, str]:
        now = time.monotonic() if now is None else now
        for replica in [r for r, (at, _) in self._texts.items() if now - at > self.stale_after_s]:
            del self._texts[replica]
        return {r: text for r, (_, text) in self._texts.items()}

    def merged(self, now: float | None = None) -> str:
        return merge(self.live(now))
