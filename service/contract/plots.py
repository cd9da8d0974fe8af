"""Pictures of an in-silico mutagenesis (:mod:`service.contract.mutagenesis`): PNG or SVG bytes.

One figure per record, built for reading a sequence base by base:

* on top, an overview of the whole record: the importance (largest \\|change\\| at each position)
  as a line, the mean change as a thin line around 0, and the reference score in the title;
* then the record in rows of :func:`row_width` positions (100 for up to 400 nt, so that 300 bp
  is three rows of letters one can read; 200 beyond, so that 2,292 nt is twelve rows: in the
  PNG the letters are small but the shape is plain, and the SVG zooms to any letter). Each row
  is a logo (logomaker) of the reference bases, each letter as tall as its position's
  importance, and under it a heat map of the L x 4 changes (rows A, C, G, T; red: the mutant
  scores higher, blue: lower; the same colour scale for the whole record). An ``N`` is drawn
  as a grey ``N``.

matplotlib (Agg backend, no display needed) and logomaker are imported when a picture is asked
for, not with this module: importing them takes about a second.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np

from service.contract.errors import DnabertError
from service.contract.mutagenesis import BASES, Explanation, explanations_json, importance_bedgraph

ImageFormat = Literal["png", "svg"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("png", "svg")
FORMATS = ("json", "bedgraph", *IMAGE_FORMATS)
"""Every output format of an explanation (:func:`render_explanations`), JSON first."""

_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839", "N": "#9E9E9E"}
_WIDTH_IN = 16.0
_DPI = 100
_FONT = "DejaVu Sans Mono"  # ships with matplotlib


def row_width(length: int) -> int:
    """Positions per row of letters: 100 up to 400 nt, else 200."""
    return 100 if length <= 400 else 200


def explanation_figure(sequence: str, changes: np.ndarray, importance: np.ndarray, mean_change: np.ndarray,
                       title: str, fmt: ImageFormat = "png", score_name: str = "score") -> bytes:
    """The picture of one record, for one label: its changes (L, 4), importance (L,) and mean
    change (L,) (:class:`service.contract.mutagenesis.Explanation`), as PNG or SVG bytes."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # no display needed (logomaker imports pyplot)
        matplotlib.use("Agg")
    import logomaker
    import matplotlib.transforms
    from matplotlib.figure import Figure

    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    changes = np.asarray(changes, dtype=np.float64)
    length = len(sequence)
    if changes.shape != (length, 4):
        raise ValueError(f"changes of shape {changes.shape} for a sequence of {length} nt")
    imp, mean = np.asarray(importance, dtype=np.float64), np.asarray(mean_change, dtype=np.float64)
    width = row_width(length)
    rows = -(-length // width)
    limit = float(np.abs(changes).max()) or 1.0
    top = float(imp.max()) * 1.08 or 1.0

    heights = [2.0] + [1.0, 0.7] * rows
    fig = Figure(figsize=(_WIDTH_IN, sum(heights) * 0.9 + 0.6), dpi=_DPI)
    left = 0.055 if length < 1000 else 0.07  # room for the row labels ("1001-1200")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[60, 1], hspace=0.55, wspace=0.02,
                            left=left, right=0.95, top=1 - 0.45 / fig.get_figheight(),
                            bottom=0.55 / fig.get_figheight())

    overview = fig.add_subplot(grid[0, 0])
    x = np.arange(length)
    overview.fill_between(x, imp, step="mid", color="#444444", alpha=0.35, linewidth=0)
    overview.plot(x, imp, drawstyle="steps-mid", color="#222222", linewidth=0.8, label="importance (max |change|)")
    overview.plot(x, mean, drawstyle="steps-mid", color="#C0392B", linewidth=0.6, label="mean change")
    overview.axhline(0, color="#999999", linewidth=0.5)
    overview.set_xlim(-0.5, length - 0.5)
    overview.set_ylabel("change", fontsize=9)
    overview.set_title(title, fontsize=11, loc="left")
    overview.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, ncol=2)
    overview.tick_params(labelsize=8)
    for r in range(1, rows):  # where each row below starts
        overview.axvline(r * width - 0.5, color="#BBBBBB", linewidth=0.5, linestyle=":")

    image = None
    for r in range(rows):
        start, stop = r * width, min(length, (r + 1) * width)
        logo_ax = fig.add_subplot(grid[1 + 2 * r, 0])
        heat_ax = fig.add_subplot(grid[2 + 2 * r, 0])
        for i in range(start, stop):  # one glyph per position (a logomaker.Logo draws all five)
            if imp[i] > 0:
                base = sequence[i] if sequence[i] in BASES else "N"
                logomaker.Glyph(i, base, ax=logo_ax, floor=0.0, ceiling=float(imp[i]), color=_COLORS[base],
                                font_name=_FONT, vpad=0.02)
        for spine in ("top", "right"):
            logo_ax.spines[spine].set_visible(False)
        logo_ax.set_ylim(0, top)
        logo_ax.set_ylabel(f"{start + 1}-{stop}", fontsize=7, rotation=0, ha="right", va="center")
        # the sequence itself, a letter under each position, so that even the flat stretches read
        under = matplotlib.transforms.blended_transform_factory(logo_ax.transData, logo_ax.transAxes)
        for i in range(start, stop):
            logo_ax.text(i, -0.04, sequence[i], transform=under, ha="center", va="top", fontfamily="monospace",
                         fontsize=7 if width <= 100 else 4.5, color=_COLORS.get(sequence[i], _COLORS["N"]))
        logo_ax.set_xticks([])
        logo_ax.tick_params(axis="y", labelsize=7, length=2)
        image = heat_ax.imshow(changes[start:stop].T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                               interpolation="nearest", extent=(start - 0.5, stop - 0.5, 3.5, -0.5))
        heat_ax.set_yticks(range(4), list(BASES), fontsize=6)
        heat_ax.tick_params(labelsize=7, length=2)
        step = 10 if width <= 100 else 20
        heat_ax.set_xticks(range(start, stop, step), [str(i + 1) for i in range(start, stop, step)])
        for ax in (logo_ax, heat_ax):
            ax.set_xlim(start - 0.5, start + width - 0.5)
        for spine in heat_ax.spines.values():
            spine.set_visible(False)
    bar_ax = fig.add_subplot(grid[1:, 1])
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label(f"{score_name}: mutant - reference", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.text(left, 0.1 / fig.get_figheight(), "positions 1-based; letters: the reference base, as tall as the "
             "largest |change| of its substitutions; heat map: the change for each base (0 at the reference)",
             fontsize=7, color="#555555")

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=_DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


class OneRecordPerImage(DnabertError):
    """A picture shows one record: an image format asked for with several records (or with one
    that has nothing to show)."""

    code = "one_record_per_image"
    http_status = 422


def require_one_record(count: int) -> None:
    """422 unless exactly one record is to be drawn (checked before any scoring)."""
    if count != 1:
        raise OneRecordPerImage(f"a PNG or SVG picture shows one record; this request has {count}: send one "
                                "record per picture, or ask for format=json or bedgraph, which take several")


def explanation_image(explanations: Sequence[Explanation], model: str, fmt: ImageFormat,
                      label: str | None = None) -> bytes:
    """The picture of the one record of ``explanations``, for ``label`` (default: the first)."""
    require_one_record(len(explanations))
    (e,) = explanations
    if e.changes is None or e.reference is None:
        raise OneRecordPerImage(f"record {e.id!r} has no A, C, G or T: it is not scored, so there is nothing to "
                                "draw", record_id=e.id)
    j = e.label_index(label)
    name = "P(promoter)" if e.labels == ("promoter",) else f"{e.labels[j]} score"
    title = (f"{e.id}: {len(e.sequence)} nt, model {model}, {name} = {float(e.reference[j]):.4f}; "
             f"in-silico mutagenesis ({e.mutants} mutants)")
    return explanation_figure(e.sequence, e.changes[:, :, j], e.importance[:, j], e.mean_change[:, j], title, fmt,
                              name)


def render_explanations(explanations: Sequence[Explanation], task: str, model: str, fmt: str,
                        label: str | None = None) -> str | bytes:
    """An explanation in one of the formats offered (``json``, ``bedgraph``, ``png``, ``svg``):
    what ``POST /explain/...`` answers and ``dnabert-serve explain`` writes."""
    if fmt == "json":
        return explanations_json(explanations, task, model) + "\n"
    if fmt == "bedgraph":
        return importance_bedgraph(explanations, model, label)
    return explanation_image(explanations, model, fmt, label)  # type: ignore[arg-type]
