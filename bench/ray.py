"""The service on Ray Serve against the single process: throughput and latency with 1 and 2
replicas, and the service's dynamic batcher against Ray's ``@serve.batch`` in the replicas.

    python -m bench.ray                          # writes bench/results/ray.{md,json}
    python -m bench.ray --seconds 5 --rounds 1   # shorter
    python -m bench.ray --gpu                    # on a CUDA host: replicas on half a GPU each

It starts a private Ray cluster on 127.0.0.1 (``ray start --head --block`` in a temporary folder,
on free ports; stopped by its process id), deploys the app with ``dnabert-serve ray`` once per
configuration, and drives each with ``bench.loadgen`` (its own process) on the loopback address.
The single-process ``dnabert-serve serve`` runs the same loads for reference. Figures are
printed and written; nothing here asserts a speed.

:class:`LocalRayCluster` and :class:`RayDeployment` are also what ``tests/ray`` run on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from bench.run import REPO, fasta, free_port, machine, random_dna, wait_ready

BIN = Path(sys.executable).parent


def _bin(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


# -- processes -------------------------------------------------------------------------------
def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalRayCluster:
    """A one-node Ray cluster on 127.0.0.1 for this process alone: ``ray start --head --block`` in
    a temporary folder, every port chosen free, token authentication with its own token (clients
    take :attr:`env`), stopped by its process id (SIGTERM, which stops the processes it started;
    any left after that are killed by their ids)."""

    def __init__(self, num_cpus: float = 2, *, num_gpus: int = 0, startup_timeout: float = 120):
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.temp_dir: str | None = None
        self.port = 0
        self.env: dict[str, str] = {}
        """What a client of this cluster needs in its environment (its token)."""
        self._log: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalRayCluster:
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit
        (self.port, object_manager, node_manager, client, agent_http, agent_grpc, runtime_env,
         metrics) = _free_ports(8)
        cmd = [_bin("ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
               "--num-cpus", str(self.num_cpus), "--num-gpus", str(self.num_gpus), "--include-dashboard", "false",
               "--disable-usage-stats", "--temp-dir", self.temp_dir,
               "--object-manager-port", str(object_manager), "--node-manager-port", str(node_manager),
               "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
               "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
               "--metrics-export-port", str(metrics), "--object-store-memory", str(256 * 1024 * 1024)]
        # Token authentication with a token of its own, in its folder: no other cluster's token
        # (~/.ray/auth_token) is used, and none is left behind.
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(uuid.uuid4().hex)
        token.chmod(0o600)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.env}
        env.pop("RAY_AUTH_TOKEN", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not any("Ray runtime started" in line for line in self._log):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = "".join(self._log[-40:])
                self.stop()
                raise RuntimeError(f"the Ray cluster did not start:\n{log}")
            time.sleep(0.2)
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.append(line)

    def processes(self, needle: str) -> list[int]:
        """The cluster's processes whose command line holds ``needle`` (e.g. the Serve replicas
        of an application: ``ServeReplica:dnabert:dnabert``)."""
        if self.proc is None:
            return []
        return [pid for pid in descendants(self.proc.pid) if needle in cmdline(pid) and alive(pid)]

    def replicas(self, app: str = "dnabert", deployment: str = "dnabert") -> list[int]:
        """Process ids of the Serve replicas of one deployment (Ray titles a replica's process
        ``ray::ServeReplica:<app>:<deployment>``, with ``.<method>`` while it runs one)."""
        title = f"ray::ServeReplica:{app}:{deployment}"
        if self.proc is None:
            return []
        return [pid for pid in descendants(self.proc.pid)
                if (cmdline(pid).strip() + ".").startswith(title + ".") and alive(pid)]

    def stop(self) -> None:
        if self.proc is None:
            return
        left = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in left:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RayDeployment:
    """``dnabert-serve ray --address <cluster>`` in a process of its own, on 127.0.0.1."""

    def __init__(self, cluster: LocalRayCluster, port: int, *options: str, env: dict[str, str] | None = None):
        self.cluster, self.port, self.options = cluster, port, options
        self.env = {**os.environ, **cluster.env, **(env or {})}
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> RayDeployment:
        cmd = [_bin("dnabert-serve"), "ray", "--address", self.cluster.address, "--host", "127.0.0.1",
               "--port", str(self.port), *self.options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                     cwd=REPO)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any("serving on" in line for line in self.output):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the deployment did not start:\n" + "".join(self.output[-60:]))
            time.sleep(0.2)
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code, self.proc = self.proc.returncode, None
        return code

    def __enter__(self) -> RayDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the benchmark ---------------------------------------------------------------------------
def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def drive(url: str, fasta_path: str, records: int, clients: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--url", url, "--fasta", fasta_path,
                          "--records", str(records), "--clients", str(clients), "--seconds", str(seconds)],
                         capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout)


def single_process(loads: list[tuple[str, int, int]], seconds: float, files: dict[str, str]) -> list[dict]:
    port = free_port()
    env = {**os.environ, "DNABERT_PORT": str(port), "DNABERT_HOST": "127.0.0.1"}
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--log-level", "warning"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_ready(port, server)
        return [measured(f"http://127.0.0.1:{port}", files, load, seconds) for load in loads]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def metric_total(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def measured(url: str, files: dict[str, str], load: tuple[str, int, int], seconds: float) -> dict:
    """One load, and the mean batch size of its batches (from the metrics, every replica's)."""
    name, records, clients = load
    time.sleep(6)  # every replica has reported its metrics (service.ray.metrics.REPORT_EVERY_S)
    before = (metric_total(url, "dnabert_batch_size_sum"), metric_total(url, "dnabert_batch_size_count"))
    row = {"sequences": name, **drive(url, files[name], records, clients, seconds)}
    time.sleep(6)
    sizes = metric_total(url, "dnabert_batch_size_sum") - before[0]
    batches = metric_total(url, "dnabert_batch_size_count") - before[1]
    row["batch_size_mean"] = sizes / batches if batches else float("nan")
    return row


CONFIGS = [
    ("Ray, 1 replica, our batcher", ["--replicas", "1", "--num-cpus", "1"]),
    ("Ray, 2 replicas, our batcher", ["--replicas", "2", "--num-cpus", "1"]),
    ("Ray, 1 replica, @serve.batch", ["--replicas", "1", "--num-cpus", "1", "--batching", "serve"]),
    ("Ray, 2 replicas, @serve.batch", ["--replicas", "2", "--num-cpus", "1", "--batching", "serve"]),
]
LOADS = [("300 bp", 100, 8), ("100-1,000 bp", 100, 8), ("300 bp", 1, 16)]
"""(sequences, records per request, concurrent clients)."""


def sequences() -> dict[str, str]:
    """The FASTA files the loads draw from: 300 bp, and lengths spread over 100-1,000 bp."""
    rng = np.random.default_rng(6)
    mixed = [s[: int(n)] for s, n in zip(random_dna(4000, 1000, seed=7), rng.integers(100, 1001, 4000))]
    files = {}
    for name, seqs in (("300 bp", random_dna(4000, 300, seed=5)), ("100-1,000 bp", mixed)):
        with tempfile.NamedTemporaryFile("w", suffix=".fa", delete=False) as fh:
            fh.write(fasta(seqs))
        files[name] = fh.name
    return files


def run(loads: list[tuple[str, int, int]], seconds: float, rounds: int, gpu: bool = False) -> dict:
    """Every configuration under every load, ``rounds`` times over (one cluster throughout), so
    that a burst of other work on a shared machine moves one round, not the median. ``gpu``: the
    cluster has one GPU and every replica takes half of it."""
    files = sequences()
    result: dict = {"machine": machine(), "loads": loads, "seconds": seconds, "rounds": rounds, "rows": [],
                    "gpu": gpu, "load_average_before": load_average(), "load_average_during": []}
    try:
        with LocalRayCluster(num_cpus=os.cpu_count() or 2, num_gpus=1 if gpu else 0) as cluster:
            port = free_port()
            for n in range(rounds):
                print(f"round {n + 1} of {rounds}: single process (dnabert-serve serve)", flush=True)
                for row in single_process(loads, seconds, files):
                    result["rows"].append({"config": "single process, our batcher", "round": n, **row})
                    _show(result["rows"][-1])
                for name, options in CONFIGS:
                    print(f"round {n + 1} of {rounds}: {name}", flush=True)
                    if gpu:
                        options = [*options, "--num-gpus", "0.5"]
                    with RayDeployment(cluster, port, *options) as dep:
                        for load in loads:
                            result["rows"].append({"config": name, "round": n,
                                                   **measured(dep.url, files, load, seconds)})
                            _show(result["rows"][-1])
                result["load_average_during"].append(load_average())
    finally:
        for path in files.values():
            os.unlink(path)
    result["load_average_after"] = load_average()
    return result


def summary(rows: list[dict]) -> list[dict]:
    """Per configuration and load: the median over rounds (throughput also as min-max)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["config"], row["sequences"], row["records_per_request"], row["clients"]), []).append(row)
    out = []
    for (config, seqs, records, clients), group in groups.items():
        rate = [g["sequences_per_s"] for g in group]
        out.append({"config": config, "sequences": seqs, "records_per_request": records, "clients": clients,
                    "sequences_per_s": float(np.median(rate)), "min": min(rate), "max": max(rate),
                    "p50_ms": float(np.median([g["p50_ms"] for g in group])),
                    "p99_ms": float(np.median([g["p99_ms"] for g in group])),
                    "batch_size_mean": float(np.nanmedian([g["batch_size_mean"] for g in group])),
                    "errors": sum(n for g in group for status, n in g["statuses"].items() if status != "200"),
                    "requests": sum(n for g in group for n in g["statuses"].values())})
    return out


def _show(row: dict) -> None:
    print(f"  {row['sequences']:>12}, {row['records_per_request']:4d} records x {row['clients']:3d} clients: "
          f"{row['sequences_per_s']:8.1f} seq/s, {row['requests_per_s']:7.1f} req/s, p50 {row['p50_ms']:.0f} ms, "
          f"p99 {row['p99_ms']:.0f} ms, {row['statuses']}", flush=True)


def shared(r: dict) -> bool:
    """Whether other work kept the machine busy when the benchmark started."""
    return r["load_average_before"][0] > 1.0


def report_md(r: dict) -> str:
    m = r["machine"]
    during = ", ".join(" / ".join(f"{x:.1f}" for x in la) for la in r["load_average_during"])
    lines = [
        "# Ray Serve benchmark",
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, ONNX Runtime {m['onnxruntime']}, "
        f"commit {m['commit']}, {m['date']}.",
        f"Command: `python -m bench.ray --seconds {r['seconds']:g} --rounds {r['rounds']}`. Model: "
        "promoter/cnn_bilstm_max (the default), random sequences of 300 bp or of 100-1,000 bp, FASTA uploads; the "
        "load generator is a process of its own on the same machine. Each Ray replica reserves 1 CPU"
        + (" and half of the GPU" if r.get("gpu") else "") + "; every replica and the single process run 2 "
        f"batcher workers. Execution providers available: {', '.join(m['providers'])}.",
        f"Figures are medians over {r['rounds']} rounds (every configuration once per round, on one Ray "
        "cluster); sequences/s also as the range over the rounds. Mean batch: sequences per batch during the "
        "load, from /metrics (every replica). Load average (1/5/15 min) before: "
        f"{' / '.join(f'{x:.1f}' for x in r['load_average_before'])}; after each round: {during}."
        + (" The machine was shared: other processes kept it busy when the benchmark started (the load "
           "average above), so single figures move with them; the medians less." if shared(r) else ""),
        "",
        "| configuration | sequences | records/request | clients | sequences/s (min-max) | p50 ms | p99 ms "
        "| mean batch | errors / requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary(r["rows"]):
        lines.append(f"| {row['config']} | {row['sequences']} | {row['records_per_request']} | {row['clients']} | "
                     f"{row['sequences_per_s']:.0f} ({row['min']:.0f}-{row['max']:.0f}) | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['batch_size_mean']:.1f} | {row['errors']} / {row['requests']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each load (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="times every configuration is measured (default 3)")
    p.add_argument("--gpu", action="store_true", help="a CUDA host: replicas on half a GPU each")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "ray"), help="report path without suffix")
    a = p.parse_args(argv)
    result = run(LOADS, a.seconds, a.rounds, a.gpu)
    Path(a.out + ".json").write_text(json.dumps(result, indent=2))
    Path(a.out + ".md").write_text(report_md(result))
    print(f"wrote {a.out}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
