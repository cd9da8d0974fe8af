"""Training-curve pictures from synthetic ``curve.jsonl`` files (the format of
``training.train.train_classifier``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main as train_cli
from training.curves import plot_curves, plot_run, read_curve, run_info

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, dev: list[float], task: str | None = "promoter", every: int = 50,
             per_epoch: int = 3) -> Path:
    run = root / name
    run.mkdir(parents=True)
    lines = [json.dumps({"step": every * (i + 1), "epoch": 1 + i // per_epoch, "train_loss": 0.7 - 0.05 * i,
                         "dev_score": score, "dev": {"mcc": score}, "seconds": 1.5 * (i + 1)})
             for i, score in enumerate(dev)]
    (run / "curve.jsonl").write_text("\n".join(lines) + "\n\n")
    if task is not None:
        (run / "config.json").write_text(json.dumps({"train": {"task": task, "variant": name}}))
    return run


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_read_curve_and_run_info(tmp_path):
    run = make_run(tmp_path, "cnn", [0.1, 0.3, 0.2])
    points = read_curve(run)
    assert [p["step"] for p in points] == [50, 100, 150] and points[1]["dev_score"] == 0.3
    assert run_info(run) == ("cnn", "promoter")
    bare = make_run(tmp_path, "run-17", [0.2], task=None)
    assert run_info(bare) == ("run-17", None)


def test_the_picture_holds_the_files_numbers(tmp_path):
    dev = [0.1, 0.35, 0.3, 0.42, 0.4, 0.41, 0.39]
    points = read_curve(make_run(tmp_path, "bilstm", dev))
    fig = plot_run(points, "bilstm", "promoter")
    left, right = fig.axes
    line = left.lines[0]
    assert list(line.get_xdata()) == [50 * (i + 1) for i in range(len(dev))]
    assert list(line.get_ydata()) == dev
    kept = left.lines[1]  # the step training keeps: the best dev score
    assert list(kept.get_xdata()) == [200] and list(kept.get_ydata()) == [0.42]
    assert list(right.lines[0].get_ydata()) == pytest.approx([0.7 - 0.05 * i for i in range(len(dev))])
    assert left.get_ylabel() == "dev MCC" and right.get_xlabel() == "step" and "bilstm" in left.get_title()
    epochs = left.lines[2:]  # epoch boundaries after steps 150 and 300
    assert sorted(ln.get_xdata()[0] for ln in epochs) == [150, 300]
    lnc = plot_run(points, "lncrna", "lncrna-localization")
    assert lnc.axes[0].get_ylabel() == "dev macro AUROC"


def test_one_png_per_run(tmp_path):
    runs = [make_run(tmp_path / "runs", v, [0.1 * (i + 1) for i in range(n)])
            for v, n in (("base", 4), ("cnn_bilstm_max", 9))]
    out = tmp_path / "images" / "curve_{name}.png"
    written = plot_curves(runs, out)
    assert written == {"base": tmp_path / "images" / "curve_base.png",
                       "cnn_bilstm_max": tmp_path / "images" / "curve_cnn_bilstm_max.png"}
    for path in written.values():
        width, height = png_size(path)
        assert (width, height) == (1000, 360)
    single = plot_curves(runs[:1], tmp_path / "one.png")
    assert list(single.values()) == [tmp_path / "one.png"] and png_size(tmp_path / "one.png")


def test_bad_runs_are_refused_before_anything_is_written(tmp_path):
    good = make_run(tmp_path, "base", [0.2, 0.3])
    with pytest.raises(FileNotFoundError, match="curve.jsonl"):
        plot_curves([good, tmp_path / "nothing"], tmp_path / "c_{name}.png")
    assert not list(tmp_path.glob("c_*.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "curve.jsonl").write_text("")
    with pytest.raises(ValueError, match="no points"):
        read_curve(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "curve.jsonl").write_text('{"step": 1, "train_loss": 0.5}\n')
    with pytest.raises(ValueError, match="dev_score"):
        read_curve(broken)
    with pytest.raises(ValueError, match="{name}"):
        plot_curves([good, make_run(tmp_path, "cnn", [0.1])], tmp_path / "same.png")
    twin = make_run(tmp_path / "other", "base", [0.1])
    with pytest.raises(ValueError, match="base"):
        plot_curves([good, twin], tmp_path / "c_{name}.png")


def test_the_command(tmp_path, capsys):
    run = make_run(tmp_path, "cnn", [0.2, 0.5, 0.4])
    out = tmp_path / "docs" / "curve_{name}.png"
    assert train_cli(["curves", str(run), "--out", str(out)]) == 0
    assert png_size(tmp_path / "docs" / "curve_cnn.png")
    assert "cnn:" in capsys.readouterr().out
    assert train_cli(["curves", str(tmp_path / "missing")]) == 2
