"""Live-stream latency and capacity on the real servers: commit-to-SSE-client p50/p99 at a steady action rate,
while one API process holds many concurrent job streams whose every event is counted.

    python -m benchmarks.stream_latency --rate 200 --seconds 20 --streams 1000

Starts `jobyard api`, `relay` and `worker` on PostgreSQL (a fresh database via --pg), RabbitMQ and Redis. Then:
1. holds ``--streams`` SSE job streams (10 per job) on jobs of slow actions that outlive the measurement;
2. a separate client process follows the tenant stream while ``--rate`` demo.noop actions per second are
   submitted; latency = arrival at that client − the event's ``ts`` (set by the worker right after its commit);
3. waits for the slow jobs to end and checks that every held stream saw each action succeed and job.final.
"""

# ruff: noqa: ASYNC110, ASYNC220, ASYNC221, ASYNC240 — a driver: its blocking calls sit outside the measured path

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.status_cache import ROOT, free_port, fresh_database


async def sse(response: httpx.Response) -> Any:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields.get("event", "message"), fields["data"]
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


async def latency_client(url: str, seconds: float, out: Path) -> None:
    """Child process: follow the tenant stream, record commit-to-arrival of every final action event."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=None) as http, http.stream("GET", "/api/events") as response:
        Path(str(out) + ".ready").write_text("ready")
        deadline = time.monotonic() + seconds
        async for event, data in sse(response):
            if event == "action.status":
                body = json.loads(data)
                if body.get("status") == "succeeded" and body.get("queue") == "default":
                    latencies.append((time.time() - body["ts"]) * 1000)
            if time.monotonic() > deadline:
                break
    out.write_text(json.dumps(latencies))


async def hold_stream(port: int, job_id: str, opened: asyncio.Event, counters: dict[str, int]) -> dict[str, int]:
    """One held job stream on a bare socket (HTTP/1.0: no chunking), so the benchmark's clients stay cheap."""
    seen = {"snapshot": 0, "succeeded": 0, "progress": 0, "final": 0}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/jobs/{job_id}/events HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
    buffer = b""
    while chunk := await reader.read(65536):
        *frames, buffer = (buffer + chunk).split(b"\n\n")
        for frame in frames:
            if b"event: snapshot" in frame:
                seen["snapshot"] += 1
                counters["open"] += 1
                if counters["open"] >= counters["want"]:
                    opened.set()
            elif b"event: action.progress" in frame:
                seen["progress"] += 1
            elif b"event: action.status" in frame and b'"status":"succeeded"' in frame:
                seen["succeeded"] += 1
            elif b"event: job.final" in frame:
                seen["final"] += 1
    writer.close()
    return seen


async def submit_at_rate(http: httpx.AsyncClient, rate: float, seconds: float, per_job: int) -> int:
    loop = asyncio.get_running_loop()
    jobs = int(rate * seconds / per_job)
    start = loop.time()
    body = {"actions": [{"type": "demo.noop", "payload": {"n": i}} for i in range(per_job)]}
    pending = []
    for i in range(jobs):
        await asyncio.sleep(max(0.0, start + i * per_job / rate - loop.time()))
        pending.append(asyncio.create_task(http.post("/api/jobs", json=body)))
    responses = await asyncio.gather(*pending)
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202][:3]
    return jobs * per_job


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def main(args: argparse.Namespace) -> None:
    pg = await fresh_database(args.pg, "jobyard_bench_streams")
    env = {
        **os.environ,
        "JOBYARD_DATABASE_URL": pg,
        "JOBYARD_BROKER_URL": args.amqp,
        "JOBYARD_REDIS_URL": args.redis,
        "JOBYARD_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
        "JOBYARD_LOG_LEVEL": "WARNING",
        "JOBYARD_PORT": str(free_port()),
    }
    url = f"http://127.0.0.1:{env['JOBYARD_PORT']}"
    subprocess.run([sys.executable, "-m", "jobyard", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    procs = [
        subprocess.Popen([sys.executable, "-m", "jobyard", *cmd], env=env, cwd=ROOT)
        for cmd in (["api"], ["relay"], ["worker", "-c", "512"])
    ]
    try:
        async with httpx.AsyncClient(
            base_url=url, timeout=httpx.Timeout(30, read=None), limits=httpx.Limits(max_connections=None)
        ) as http:
            for _ in range(100):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            # 1. Hold the streams: 10 per job, on jobs of two slow actions that outlive the measurement.
            slow = {"seconds": args.seconds + 10}
            job_ids = []
            for _ in range(args.slow_jobs if args.slow_jobs is not None else max(1, args.streams // 10)):
                r = await http.post("/api/jobs", json={"actions": [{"type": "demo.sleep", "payload": slow}] * 2})
                job_ids.append(r.json()["id"])
            per_job = max(1, args.streams // len(job_ids))
            opened, counters = asyncio.Event(), {"open": 0, "want": len(job_ids) * per_job}
            t0 = time.monotonic()
            holders = [
                asyncio.create_task(hold_stream(int(env["JOBYARD_PORT"]), j, opened, counters))
                for j in job_ids
                for _ in range(per_job)
            ]
            await asyncio.wait_for(opened.wait(), 120)
            print(f"{len(holders)} job streams open after {time.monotonic() - t0:.1f}s")
            # 2. Latency under load, measured by a separate process.
            out = Path(tempfile.gettempdir()) / f"jobyard-stream-latency-{os.getpid()}.json"
            client = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.stream_latency", "--client", url, "--out", str(out),
                 "--seconds", str(args.seconds + 5)],
                cwd=ROOT,
            )  # fmt: skip
            while not Path(str(out) + ".ready").exists():
                await asyncio.sleep(0.05)
            submitted = await submit_at_rate(http, args.rate, args.seconds, args.per_job)
            await asyncio.to_thread(client.wait, timeout=args.seconds + 60)  # the held clients keep reading
            latencies = json.loads(out.read_text())
            # 3. Every held stream must have seen both slow actions succeed, then job.final.
            results = await asyncio.wait_for(asyncio.gather(*holders), args.seconds + 120)
        complete = sum(1 for r in results if r["final"] == 1 and r["succeeded"] == 2)
        progress = sum(r["progress"] for r in results)
        print(f"commit → SSE client, {len(latencies)} of {submitted} actions at {args.rate:g}/s: "
              f"p50 {percentile(latencies, 50):.1f} ms  p99 {percentile(latencies, 99):.1f} ms  "
              f"max {max(latencies, default=float('nan')):.1f} ms")  # fmt: skip
        print(f"held streams: {len(results)}; complete (2 succeeded + job.final): {complete}; "
              f"progress events delivered: {progress}")  # fmt: skip
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="actions per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-job", type=int, default=10, help="actions per submitted job")
    parser.add_argument("--streams", type=int, default=1000, help="job streams held open during the run")
    parser.add_argument("--slow-jobs", type=int, help="jobs of two slow actions the streams watch (streams/10)")
    parser.add_argument(
        "--pg", default=os.environ.get("JOBYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--amqp", default=os.environ.get("JOBYARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--redis", default=os.environ.get("JOBYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(latency_client(args.client, args.seconds, Path(args.out)))
    else:
        asyncio.run(main(args))
