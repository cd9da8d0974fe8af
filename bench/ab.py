"""Interleaved A/B of the service end to end between two checkouts of this project.

    git worktree add /tmp/before <commit>
    python -m bench.ab /tmp/before .          # or any two checkouts; --rounds, --seconds

Neighbours on shared machines are noisy, so each round runs both checkouts one after the other
(the order alternating between rounds) with :func:`bench.run.bench_service` (a real uvicorn
server per checkout, the load generator in its own process) and the medians over the rounds are
printed: idle single-sequence p50 and throughput for 1,000-record x 2-client and 100-record x
8-client uploads. Each checkout serves its own ``models/`` with ``cnn_bilstm_max``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_MEASURE = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench.run import bench_service
r = bench_service(Path(sys.argv[1]) / "models", "cnn_bilstm_max", [(1000, 2), (100, 8)],
                  float(sys.argv[2]), 60, {})
print("RESULT " + json.dumps({"idle_p50_ms": r["idle"]["p50_ms"],
                              "seq_per_s": [row["sequences_per_s"] for row in r["loads"]]}))
'''


def measure(tree: Path, seconds: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(tree), str(seconds)], cwd=tree, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0, help="per load level")
    args = p.parse_args(argv)
    trees = {str(args.a): args.a.resolve(), str(args.b): args.b.resolve()}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for rnd in range(args.rounds):
        order = list(trees.items()) if rnd % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            results[name].append(measure(tree, args.seconds))
            print(rnd, name, results[name][-1], flush=True)
    for name, rows in results.items():
        print(f"{name}: idle p50 {statistics.median(r['idle_p50_ms'] for r in rows):.2f} ms, "
              f"1000x2 {statistics.median(r['seq_per_s'][0] for r in rows):.0f} seq/s, "
              f"100x8 {statistics.median(r['seq_per_s'][1] for r in rows):.0f} seq/s (medians of {len(rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
