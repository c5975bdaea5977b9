"""What writing submissions together saves PostgreSQL: the same jobs inserted alone and in groups, CPU per job.

    python -m benchmarks.group_commit --jobs 2000 --actions 10 --concurrency 8 --groups 1,8,16

Stores jobs with the repository's own multi-job insert (the statement ``POST /api/jobs`` runs) in a fresh
database. "alone": one job per statement, ``--concurrency`` statements in flight on as many connections (how
submissions went before they were grouped; the statement with one job costs PostgreSQL within 5 % of what the
former single-job statement did, in a scratch comparison of the two). "grouped by N": N jobs per
statement, one statement at a time (what the group commit does when N submissions arrive while one is being
written). Reports jobs/s and the CPU time per job of every local PostgreSQL process and of this client. The
handoff is left out (no broker): the rows stay in the outbox. Alternate the modes in one run; the machine's speed
moves between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from benchmarks.common import add_store_arguments, cpu_seconds, print_result, scratch_repository, server_pids


def _jobs(repo: Any, count: int, actions: int) -> list[Any]:
    """New jobs as the API hands them to the store: ids, action specs, outbox bodies (the repository's own)."""
    from jobyard.ids import uuid7, uuid7_many
    from jobyard.model import ActionSpecIn
    from jobyard.store.repository import _NewJob

    out = []
    for _ in range(count):
        job_id, ids = uuid7(), uuid7_many(actions)
        specs = [ActionSpecIn("bench.noop", "bench", {"n": n}, 3, 60.0) for n in range(actions)]
        outbox = repo._outbox_bodies(job_id, ids, specs)
        out.append(_NewJob("default", "bench", {}, specs, job_id, ids, None, None, outbox))
    return out


async def _mode(repo: Any, jobs: list[Any], group: int, concurrency: int) -> dict[str, float]:
    postgres = server_pids()["postgresql"]
    pg0, me0, t0 = cpu_seconds(postgres), time.process_time(), time.perf_counter()
    if group == 1:
        todo = iter(jobs)

        async def writer() -> None:
            for job in todo:
                await repo._insert_jobs_pg(None, [job])

        await asyncio.gather(*(writer() for _ in range(concurrency)))
    else:
        for start in range(0, len(jobs), group):
            await repo._insert_jobs_pg(None, jobs[start : start + group])
    elapsed = time.perf_counter() - t0
    pg, me = cpu_seconds(postgres) - pg0, time.process_time() - me0
    return {
        "jobs_per_s": round(len(jobs) / elapsed),
        "postgresql_cpu_us_per_job": round(pg / len(jobs) * 1e6),
        "client_cpu_us_per_job": round(me / len(jobs) * 1e6),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_repository(args.pg_url, args.db_prefix, db_pool_size=max(args.concurrency, 2)) as (repo, url):
        await repo.warm()
        await _mode(repo, _jobs(repo, 200, args.actions), 1, args.concurrency)  # warm-up: plans, caches
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for group in args.groups:
                label = "alone" if group == 1 else f"grouped by {group}"
                jobs = _jobs(repo, args.jobs, args.actions)
                results.setdefault(label, []).append(await _mode(repo, jobs, group, args.concurrency))
        db = await asyncpg.connect(url)
        try:  # every job written, with all its actions
            stored = dict(
                await db.fetchrow(
                    "SELECT (SELECT count(*) FROM jobyard_jobs) AS jobs, "
                    "(SELECT count(*) FROM jobyard_actions) AS actions"
                )
            )
        finally:
            await db.close()
        expected = 200 + args.jobs * args.rounds * len(args.groups)
        if stored != {"jobs": expected, "actions": expected * args.actions}:
            raise RuntimeError(f"stored {stored}, expected {expected} jobs of {args.actions} actions")
        return {
            "jobs": args.jobs,
            "actions_per_job": args.actions,
            "concurrency": args.concurrency,
            "stored": stored,
            "modes": results,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.group_commit", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000, help="jobs per mode and round")
    p.add_argument("--actions", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8, help="statements in flight when jobs go alone")
    p.add_argument("--groups", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16])
    p.add_argument("--rounds", type=int, default=2, help="the modes alternate this many times")
    add_store_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return print_result(asyncio.run(measure(parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
