"""How jobyard's cost grows: worker processes, actions per job, and the size of the store.

python -m benchmarks.scaling workers   # throughput with 1, 2 and 4 worker processes
python -m benchmarks.scaling sizes     # cost per action for jobs of 1, 10, 100 and 1,000 actions
python -m benchmarks.scaling store     # status and list query times with 1,000,000 finished jobs stored
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from benchmarks.common import add_store_arguments, p50_p99, scratch_repository
from benchmarks.jobyard_side import JobyardConfig, run_jobyard


def _config(args: argparse.Namespace, **overrides: Any) -> JobyardConfig:
    values: dict[str, Any] = dict(
        jobs=args.jobs,
        actions=args.actions,
        workers=args.workers,
        message_actions=args.message_actions,
        latency_samples=20,
        status_rps=0.0,
        pg_admin_url=args.pg_url,
        db_prefix=args.db_prefix,
        timeout=args.timeout,
    )
    values.update(overrides)
    return JobyardConfig(**values)


def _cost(result: dict[str, Any]) -> dict[str, Any]:
    actions = result["jobs"] * result["actions_per_job"]
    cpu = result["details"]["throughput_phase_cpu_s"]
    servers = result["details"]["throughput_phase_server_cpu_s"]
    jobyard_cpu = cpu["api"] + cpu["relay"] + cpu["workers"]
    return {
        "jobs": result["jobs"],
        "actions_per_job": result["actions_per_job"],
        "workers": result["workers"],
        "actions_per_s": result["actions_per_s"],
        "elapsed_s": result["elapsed_s"],
        "jobyard_cpu_ms_per_action": round(1000 * jobyard_cpu / actions, 3),
        "server_cpu_ms_per_action": round(1000 * sum(servers.values()) / actions, 3),
        "cpu_s": cpu,
        "server_cpu_s": servers,
    }


def scale_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [_cost(run_jobyard(_config(args, workers=w))) for w in (1, 2, 4)]


def scale_sizes(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for size in (1, 10, 100, 1000):
        jobs = max(1, args.total_actions // size)
        out.append(_cost(run_jobyard(_config(args, jobs=jobs, actions=size, submit_concurrency=min(8, jobs)))))
    return out


# --- store size ---------------------------------------------------------------------------------------
# Time-ordered ids like the ones jobyard makes (48-bit milliseconds, then version 7 and pseudo-random bits).
_SEED_JOBS = """
INSERT INTO jobyard_jobs (id, tenant_id, name, metadata, status, total, succeeded, failed, cancelled,
                          created_at, started_at, finished_at, updated_at)
SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
       'default', 'seed-' || g, '{}'::jsonb, CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       1, CASE WHEN g % 50 = 0 THEN 0 ELSE 1 END, CASE WHEN g % 50 = 0 THEN 1 ELSE 0 END, 0,
       now(), now(), now(), now()
FROM generate_series($1::bigint, $2::bigint) AS g
"""
_SEED_ACTIONS = """
INSERT INTO jobyard_actions (id, job_id, seq, type, queue, payload, status, attempt, max_attempts, timeout,
                             progress, result, error, available_at, created_at, started_at, finished_at, updated_at)
SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5('a' || g), 1, 19))::uuid,
       (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
       0, 'bench.noop', 'bench', jsonb_build_object('g', g),
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 3, 300, 1,
       CASE WHEN g % 50 = 0 THEN NULL ELSE jsonb_build_object('g', g) END,
       CASE WHEN g % 50 = 0 THEN 'seeded failure' ELSE NULL END,
       now(), now(), now(), now(), now()
FROM generate_series($1::bigint, $2::bigint) AS g
"""


async def _timed(samples: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    for i in range(min(20, samples)):
        await call(i)  # warm the pools and statement caches
    latencies = []
    for i in range(samples):
        t0 = time.perf_counter()
        await call(i)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return p50_p99(latencies)


async def store_size(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_repository(args.pg_url, args.db_prefix) as (repo, url):
        db = await asyncpg.connect(url)
        t0 = time.perf_counter()
        chunk = 200_000
        for start in range(1, args.store_jobs + 1, chunk):
            end = min(args.store_jobs, start + chunk - 1)
            await db.execute(_SEED_JOBS, start, end)
            await db.execute(_SEED_ACTIONS, start, end)
        await db.execute("ANALYZE")
        seed_s = time.perf_counter() - t0
        ids = [r["id"] for r in await db.fetch("SELECT id FROM jobyard_jobs TABLESAMPLE SYSTEM (1) LIMIT 2000")]
        await db.close()
        random.shuffle(ids)
        pick = lambda i: ids[i % len(ids)]  # noqa: E731

        async def status(i: int) -> None:
            assert await repo.get_job_with_actions("default", pick(i)) is not None

        async def first_page(i: int) -> None:
            assert len(await repo.list_jobs("default", status=None, before=None, limit=51)) == 51

        async def failed_page(i: int) -> None:
            assert len(await repo.list_jobs("default", status="failed", before=None, limit=51)) == 51

        async def deep_page(i: int) -> None:
            await repo.list_jobs("default", status=None, before=pick(i), limit=51)

        timings = {
            "status (job + its actions)": await _timed(args.samples, status),
            "list, first page of 50": await _timed(args.samples, first_page),
            "list ?status=failed, first page": await _timed(args.samples, failed_page),
            "list, page at a random cursor": await _timed(args.samples, deep_page),
        }
        return {"jobs_stored": args.store_jobs, "seed_s": round(seed_s, 1), "query_ms": timings}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["workers", "sizes", "store"])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--actions", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--total-actions", type=int, default=10_000, help="sizes: actions per run")
    p.add_argument("--message-actions", type=int, default=None)
    p.add_argument("--store-jobs", type=int, default=1_000_000)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--timeout", type=float, default=600.0)
    add_store_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    if args.part == "workers":
        result: Any = scale_workers(args)
    elif args.part == "sizes":
        result = scale_sizes(args)
    else:
        result = asyncio.run(store_size(args))
    print(json.dumps({"started": started, "part": args.part, "result": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
