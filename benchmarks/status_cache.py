"""Status-read latency with and without the cache, side by side: p50/p99 at a fixed request rate, as a ratio.

    python -m benchmarks.status_cache --jobs 200 --actions 10 --rate 1000 --seconds 10

Runs `jobyard api` on the real servers (JOBYARD_DATABASE_URL admin URL via --pg, RabbitMQ, Redis), seeds jobs,
then reads random jobs' status at a constant rate (open loop: latency counts from each request's scheduled time,
so a stalled server cannot hide its queue), once with JOBYARD_CACHE_TTL=30 and once with it 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def get_loop(port: int, paths: list[str], rate: float, seconds: float, connections: int) -> list[float]:
    """Open-loop GETs at ``rate`` per second; returns latencies (ms) measured from the scheduled send time."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    clock = time.perf_counter  # not loop.time(): uvloop's clock ticks in whole milliseconds
    start = clock() + 0.05
    total = int(rate * seconds)

    async def one(scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(f"GET {random.choice(paths)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            latencies.append((clock() - scheduled) * 1000)
        finally:
            pool.put_nowait((reader, writer))

    # Each request is started at its scheduled time (creating them all up front would itself delay the first
    # ones by the time it takes); a late start still counts from the schedule, so server stalls are charged.
    # The load generator's own garbage collections (it holds every request's task) would stall its sends and
    # be charged to the server: it collects before and after the timed loop, not during it.
    gc.collect()
    gc.disable()
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        pause = scheduled - clock()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(scheduled)))
    try:
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def measure(args: argparse.Namespace, database_url: str, cache_ttl: str, job_ids: list[str]) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "JOBYARD_DATABASE_URL": database_url,
        "JOBYARD_BROKER_URL": args.amqp,
        "JOBYARD_REDIS_URL": args.redis,
        "JOBYARD_CACHE_TTL": cache_ttl,
        "JOBYARD_LOG_LEVEL": "WARNING",
        "JOBYARD_QUEUE_PREFIX": "jobyard-bench-cache",
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobyard", "api", "--port", str(port), env=env, cwd=ROOT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            paths = [f"/api/jobs/{j}/status" for j in job_ids]
            await get_loop(port, paths, rate=200, seconds=1, connections=args.connections)  # warm up
            latencies = await get_loop(port, paths, args.rate, args.seconds, args.connections)
    finally:
        api.send_signal(signal.SIGTERM)
        await asyncio.wait_for(api.wait(), 15)
    return {"p50_ms": round(percentile(latencies, 0.5), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
            "requests": len(latencies)}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--amqp", default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    database_url = await fresh_database(args.pg, "jobyard_bench_status_cache")
    migrate_env = {**os.environ, "JOBYARD_DATABASE_URL": database_url}
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobyard", "migrate", env=migrate_env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    if await migrate.wait() != 0:
        raise SystemExit("jobyard migrate failed")
    from jobyard.config import Settings
    from jobyard.model import ActionSpecIn
    from jobyard.store import create_repository

    repo = create_repository(Settings(database_url=database_url))
    specs = [ActionSpecIn("demo.noop", "bench", {"i": i}, 3, 60.0) for i in range(args.actions)]
    job_ids = [str((await repo.create_job(tenant_id="default", name=f"j{n}", metadata={}, actions=specs))[0].id)
               for n in range(args.jobs)]  # fmt: skip
    await repo.close()

    results = {
        "with_cache": await measure(args, database_url, "30", job_ids),
        "without_cache": await measure(args, database_url, "0", job_ids),
    }
    with_c, without = results["with_cache"], results["without_cache"]
    results["p99_ratio_without_over_with"] = round(without["p99_ms"] / with_c["p99_ms"], 2)
    results["params"] = {"jobs": args.jobs, "actions": args.actions, "rate": args.rate, "seconds": args.seconds}
    if args.json:
        print(json.dumps(results))
    else:
        print(f"status reads at {args.rate:g}/s for {args.seconds:g}s over {args.jobs} jobs of {args.actions} actions")
        for name in ("with_cache", "without_cache"):
            print(f"  {name:<14} p50 {results[name]['p50_ms']:>7} ms   p99 {results[name]['p99_ms']:>7} ms")
        print(f"  p99 without / with cache: {results['p99_ratio_without_over_with']}x")


if __name__ == "__main__":
    asyncio.run(main())
