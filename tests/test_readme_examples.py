"""The README's examples, run as written against a real server: every ``$ command`` of the
"Examples" section is run by ``bash`` (``localhost:8000`` pointed at the test server on
127.0.0.1) in a folder holding the section's ``example.fasta``, and its output is compared with
the output printed under it: JSON by structure (every key, type, string and list length; numbers
to 1e-6), tables and text line by line (numbers to 1e-6), Prometheus lines by their series.

``python -m tests.test_readme_examples --write`` runs the same commands and writes their real
output back into the README (after a change that is meant to change an answer).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
HOST = "localhost:8000"
TOL = 1e-6
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def examples_section(text: str) -> tuple[int, int]:
    start = text.index("### Examples")
    end = text.index("\n## ", start)
    return start, end


def parse(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(example.fasta, [(command, expected output), ...]) of the README's Examples section."""
    start, end = examples_section(text)
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text[start:end], flags=re.S)
    fasta = next(b for b in blocks if b.startswith(">"))
    session = next(b for b in blocks if b.startswith("$ "))
    commands: list[tuple[str, str]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], ""))
        else:
            cmd, out = commands[-1]
            commands[-1] = (cmd, out + line + "\n")
    return fasta, [(cmd, out.strip("\n")) for cmd, out in commands]


def run_commands(fasta: str, commands: list[tuple[str, str]], port: int) -> list[str]:
    outputs = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "example.fasta").write_text(fasta)
        for cmd, _ in commands:
            proc = subprocess.run(["bash", "-c", cmd.replace(HOST, f"127.0.0.1:{port}")], cwd=tmp,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0 or "grep" in cmd, (cmd, proc.returncode, proc.stderr)
            outputs.append(proc.stdout.strip("\n"))
    return outputs


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def same_json(got, want, where: str = "$") -> None:
    assert type(got) is type(want) or (isinstance(got, (int, float)) and isinstance(want, (int, float))
                                       and not isinstance(got, bool)), (where, got, want)
    if isinstance(want, dict):
        assert list(got) == list(want), (where, list(got), list(want))
        for key in want:
            same_json(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), (where, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            same_json(g, w, f"{where}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert _close(got, want), (where, got, want)
    elif where.endswith(".request_id") and want is not None and not str(want).startswith("demo"):
        assert isinstance(got, str) and got
    else:
        assert got == want, (where, got, want)


def same_text(got: str, want: str, cmd: str) -> None:
    g, w = got.splitlines(), want.splitlines()
    if "/metrics" in cmd:  # counters and gauges move with every request: compare the series
        assert {line.rsplit(" ", 1)[0] for line in g} == {line.rsplit(" ", 1)[0] for line in w}, (cmd, got)
        return
    assert len(g) == len(w), (cmd, got)
    for gl, wl in zip(g, w):
        assert NUMBER.sub("#", gl) == NUMBER.sub("#", wl), (cmd, gl, wl)
        for a, b in zip(NUMBER.findall(gl), NUMBER.findall(wl)):
            assert _close(float(a), float(b)), (cmd, gl, wl)


def compare(cmd: str, got: str, want: str) -> None:
    try:
        expected = json.loads(want)
    except ValueError:
        same_text(got, want, cmd)
        return
    same_json(json.loads(got), expected)


def _server():
    from tests.service.robustness import ServerProcess

    log = Path(tempfile.mkdtemp()) / "server.log"
    return ServerProcess(log, env={"DNABERT_INTRA_OP_THREADS": "0", "DNABERT_TOKENIZER_THREADS": "2"})


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_the_readme_examples_give_the_output_the_readme_shows():
    fasta, commands = parse(README.read_text())
    assert len(commands) >= 8 and any("example.fasta.gz" in c for c, _ in commands)
    with _server() as server:
        outputs = run_commands(fasta, commands, server.port)
    for (cmd, want), got in zip(commands, outputs):
        compare(cmd, got, want)


def write() -> None:
    text = README.read_text()
    fasta, commands = parse(text)
    with _server() as server:
        outputs = run_commands(fasta, commands, server.port)
    start, end = examples_section(text)
    section = text[start:end]
    old = next(b for b in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S) if b.startswith("$ "))
    new = "".join(f"$ {cmd}\n" + (out + "\n" if out else "") for (cmd, _), out in zip(commands, outputs))
    README.write_text(text[:start] + section.replace(old, new) + text[end:])


if __name__ == "__main__" and "--write" in sys.argv:
    write()
