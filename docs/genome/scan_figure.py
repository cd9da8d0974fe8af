"""Draw docs/images/scan_track.png from a scan's bedGraph and BED (the picture in the README):

    dnabert-serve scan docs/genome/scan_example.fa -o /tmp/example.bedgraph
    dnabert-serve scan docs/genome/scan_example.fa -o /tmp/example.bed
    python docs/genome/scan_figure.py /tmp/example.bedgraph /tmp/example.bed docs/images/scan_track.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def tracks(path: str) -> dict[str, list[tuple[int, int, float]]]:
    out: dict[str, list] = {}
    name = None
    for line in open(path):
        if line.startswith("track"):
            name = "+" if "promoter_plus" in line else "-"
            out[name] = []
        else:
            _, start, end, value = line.split("\t")
            out[name].append((int(start), int(end), float(value)))
    return out


def main(bedgraph: str, bed: str, png: str) -> None:
    data = tracks(bedgraph)
    regions = [line.split("\t") for line in open(bed) if not line.startswith("track")]
    fig, axes = plt.subplots(2, 1, figsize=(10, 3.6), sharex=True)
    for ax, strand, colour in zip(axes, "+-", ("#c82828", "#2828c8")):
        xs, ys = [], []
        for start, end, value in data.get(strand, []):
            if xs and start != xs[-1]:  # windows skipped for their N: no value there
                xs.append(xs[-1])
                ys.append(float("nan"))
            xs += [start, end]
            ys += [value, value]
        ax.fill_between(xs, ys, color=colour, alpha=0.35, linewidth=0)
        ax.plot(xs, ys, color=colour, linewidth=1)
        for _, start, end, name, score, s in regions:
            if s.strip() == strand:
                ax.axvspan(int(start), int(end), color=colour, alpha=0.12)
                ax.text((int(start) + int(end)) / 2, 1.02, f"{name.rsplit('_', 1)[-1]}: {int(score) / 1000:.2f}",
                        ha="center", va="bottom", fontsize=8)
        ax.axhline(0.5, color="grey", linewidth=0.6, linestyle="--")
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(f"P(promoter)\n{strand} strand", fontsize=9)
    axes[-1].set_xlabel(f"{regions[0][0] if regions else ''} (0-based)")
    fig.suptitle("dnabert-serve scan: cnn_bilstm_max, 300 bp windows every 50 bp (bedGraph; BED regions shaded)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:4])
