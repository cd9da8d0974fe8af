"""Load generator, run as its own process: concurrent clients posting FASTA uploads.

    python -m bench.loadgen --url http://127.0.0.1:8000 --fasta FILE --records 100 --clients 16 --seconds 15

Prints one JSON object: sequences/s, requests/s, latency percentiles, status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(url: str, bodies: list[bytes], per_body: int, clients: int, seconds: float, endpoint: str) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    done = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        # warm-up: one request per client
        await asyncio.gather(*(client.post(endpoint, content=bodies[0], headers={"content-type": "text/x-fasta"})
                               for _ in range(clients)))
        end = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < end:
                body = bodies[i % len(bodies)]
                i += clients
                t = time.perf_counter()
                r = await client.post(endpoint, content=body, headers={"content-type": "text/x-fasta"})
                latencies.append(time.perf_counter() - t)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    done += per_body

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "clients": clients, "records_per_request": per_body, "seconds": round(elapsed, 2),
        "sequences_per_s": done / elapsed, "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50), "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99), "statuses": statuses,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--fasta", required=True, help="records to draw request bodies from")
    p.add_argument("--records", type=int, default=100, help="records per request")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--endpoint", default="/predict/promoter")
    a = p.parse_args()
    records = [">" + r for r in open(a.fasta).read().split(">")[1:]]
    bodies = ["".join(records[i : i + a.records]).encode() for i in range(0, len(records) - a.records + 1, a.records)]
    print(json.dumps(asyncio.run(run(a.url, bodies, a.records, a.clients, a.seconds, a.endpoint))))


if __name__ == "__main__":
    main()
