"""Bounded load test of the service's query path: N concurrent clients for D seconds, loopback only.

By default it starts its own service on 127.0.0.1 (an embedded Ray, Serve, the toy genome and
model in a temporary folder), runs one toy screen to completion, then lets ``--clients``
asyncio clients query random regions of it for ``--seconds``, and prints request count, errors,
throughput and latency percentiles (a Markdown table row for ``docs/benchmarks.md``). It exits
non-zero if any request failed. Run by hand (not part of the tests)::

    python benchmarks/service_load.py                      # 50 clients, 30 s, JSON and Arrow mixed
    python benchmarks/service_load.py --server http://127.0.0.1:8000 --screen ID   # a running service

With ``--server`` the token comes from ``$SCREENING_TOKEN``; only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def start_local_service(workdir: Path, token: str) -> str:
    """Ray + Serve on 127.0.0.1 with the toy inputs of the tests; returns the URL."""
    import ray
    from ray import serve

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import free_port, write_toy_genome

    from screening.service.app import build_app

    write_toy_genome(workdir / "inputs")
    (workdir / "stores").mkdir()
    (workdir / "tokens").write_text(token + "\n")
    port = free_port()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"store_roots": [str(workdir / "stores")], "input_roots": [str(workdir / "inputs")],
                         "token_file": str(workdir / "tokens")}), name="screening", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def run_toy_screen(url: str, token: str, workdir: Path) -> str:
    """Submit the load test's screen (1,080 deletions on chr1 of the toy genome) and wait for it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import toy_spec_dict

    from screening.client import Client

    inputs = workdir / "inputs"
    paths = {"fasta": inputs / "toy.fa", "ctcf": inputs / "ctcf.bw", "atac": inputs / "atac.bw"}
    spec = toy_spec_dict(paths, "load.zarr", regions=["chr1:300-5,700"])
    spec["perturbations"][0].update(step=5)
    spec["execution"].update(chunk_size=64, batch_size=8)
    with Client(url, token) as client:
        screen = client.submit(spec)
        screen.wait(progress=True)
    return screen.id


async def client_loop(http: httpx.AsyncClient, path: str, stop_at: float, latencies: list[float],
                      errors: list[str], rng: random.Random) -> None:
    while time.perf_counter() < stop_at:
        start = rng.randrange(300, 5_000)
        region = f"chr1:{start}-{start + rng.randrange(50, 700)}"
        fmt = rng.choice(("json", "arrow"))
        began = time.perf_counter()
        try:
            response = await http.get(path, params={"region": region, "format": fmt})
            ok = response.status_code == 200 and len(response.content) > 0
            if not ok:
                errors.append(f"{region} {fmt}: {response.status_code} {response.text[:200]}")
        except httpx.HTTPError as err:
            errors.append(f"{region} {fmt}: {type(err).__name__} {err}")
            continue
        latencies.append(time.perf_counter() - began)


async def load(url: str, token: str, screen_id: str, clients: int, seconds: float, seed: int) -> tuple[list[float], list[str], float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                 limits=limits) as http:
        warm = await http.get(f"/screens/{screen_id}/results", params={"region": "chr1:1000-1100"})
        warm.raise_for_status()
        latencies: list[float] = []
        errors: list[str] = []
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*(
            client_loop(http, f"/screens/{screen_id}/results", stop_at, latencies, errors, random.Random(seed + i))
            for i in range(clients)
        ))
        return latencies, errors, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="a running service on loopback (default: start one)")
    parser.add_argument("--screen", help="with --server: a completed screen to query")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.server:
        if urlparse(args.server).hostname not in LOOPBACK:
            parser.error("--server must be a loopback address (127.0.0.1, localhost, ::1)")
        if not args.screen or not os.environ.get("SCREENING_TOKEN"):
            parser.error("--server needs --screen and $SCREENING_TOKEN")
        url, token, screen_id = args.server, os.environ["SCREENING_TOKEN"], args.screen
    else:
        token = "load-test-token"
        workdir = Path(tempfile.mkdtemp(prefix="screening-load-"))
        began = time.perf_counter()
        url = start_local_service(workdir, token)
        print(f"service up at {url} in {time.perf_counter() - began:.1f} s", flush=True)
        screen_id = run_toy_screen(url, token, workdir)

    latencies, errors, elapsed = asyncio.run(load(url, token, screen_id, args.clients, args.seconds, args.seed))
    n = len(latencies) + len(errors)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"\n{args.clients} clients x {args.seconds:.0f} s against {url}: {n:,} requests, {len(errors)} errors, "
          f"{len(latencies) / elapsed:.1f} req/s")
    print(f"latency p50 {p50 * 1000:.1f} ms, p90 {percentile(latencies, 90) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    print(f"\n| {args.clients} | {args.seconds:.0f} s | {n:,} | {len(errors)} | {len(latencies) / elapsed:.1f} | "
          f"{p50 * 1000:.1f} | {p99 * 1000:.1f} | {platform.node()}, {os.cpu_count()} CPUs |")
    for error in errors[:10]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
