"""What PostgreSQL spends on a worker's two statements per batch: the claim and the completion, alone.

    python -m benchmarks.hot_statements --jobs 2000 --actions 10 --batch 20

Stores ``--jobs`` jobs of ``--actions`` actions in a fresh database (the repository's own insert), then claims
and completes them ``--batch`` actions at a time, in order, with the worker's own calls
(``Repository.claim_actions``, ``Repository.complete_actions``: the hot path's ``q.PG_CLAIM_ACTIONS`` and
``q.PG_COMPLETE_ACTIONS``), one at a time, so the CPU of the PostgreSQL backend that serves them is exactly what
those statements cost. Reports, per action, that backend's CPU and this client's, and the wall time of each
statement; and checks that every action ended ``succeeded``. With ``--backlog`` every batch is claimed before any
is completed, so the completions find every action running (a worker with a long queue of slow handlers), and the
claims' and completions' PostgreSQL CPU are reported apart.

In the full benchmark (``benchmarks.run``) nearly two thirds of PostgreSQL's CPU serves the workers' backends:
this isolates it from everything else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import add_store_arguments, cpu_seconds, print_result, scratch_repository


async def _store(repo: Any, jobs: int, actions: int) -> list[Any]:
    """The jobs' action ids, in the order they were stored (written 50 jobs per statement, as the API groups)."""
    from jobyard.ids import uuid7, uuid7_many
    from jobyard.model import ActionSpecIn
    from jobyard.store.repository import _NewJob

    ids: list[Any] = []
    for start in range(0, jobs, 50):
        batch = []
        for _ in range(min(50, jobs - start)):
            job_id, action_ids = uuid7(), uuid7_many(actions)
            specs = [ActionSpecIn("bench.noop", "bench", {"n": n}, 3, 60.0) for n in range(actions)]
            batch.append(
                _NewJob("default", "bench", {}, specs, job_id, action_ids, None, None,
                        repo._outbox_bodies(job_id, action_ids, specs))
            )  # fmt: skip
            ids += action_ids
        await repo._insert_jobs_pg(None, batch)
    return ids


async def _complete(repo: Any, claimed: Sequence[Any]) -> None:
    """The worker's completion of a claimed batch: every first attempt succeeded."""
    from jobyard.model import Outcome, OutcomeKind

    await repo.complete_actions([Outcome(c.id, c.attempt, OutcomeKind.SUCCEEDED, {"ok": True}) for c in claimed])


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    async with scratch_repository(args.pg_url, args.db_prefix) as (repo, url):
        ids = await _store(repo, args.jobs, args.actions)
        batches = [ids[start : start + args.batch] for start in range(0, len(ids), args.batch)]

        async def claim(batch: list[Any]) -> list[Any]:
            return list(await repo.claim_actions(batch, worker_id="bench-worker", lease=60.0))

        db = await asyncpg.connect(url)
        try:
            await db.execute("ANALYZE jobyard_jobs, jobyard_actions")  # while every action is queued
            # the repository's hot-path backends (one, used one statement at a time), not this connection's
            backends = [
                r["pid"]
                for r in await db.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
            wall = {"claim": 0.0, "completion": 0.0}
            pg = {"claim": 0.0, "completion": 0.0}
            pg0, me0 = cpu_seconds(backends), time.process_time()
            if args.backlog:  # every batch claimed first: the completions find every action running
                t0 = time.perf_counter()
                claimed = [await claim(batch) for batch in batches]
                wall["claim"], pg["claim"] = time.perf_counter() - t0, cpu_seconds(backends) - pg0
                t1 = time.perf_counter()
                for actions in claimed:
                    await _complete(repo, actions)
                wall["completion"] = time.perf_counter() - t1
                pg["completion"] = cpu_seconds(backends) - pg0 - pg["claim"]
            else:  # claim a batch, complete it, next: as a worker keeping up
                for batch in batches:
                    t0 = time.perf_counter()
                    actions = await claim(batch)
                    t1 = time.perf_counter()
                    await _complete(repo, actions)
                    wall["claim"] += t1 - t0
                    wall["completion"] += time.perf_counter() - t1
            pg_all, me = cpu_seconds(backends) - pg0, time.process_time() - me0
            done = await db.fetchval("SELECT count(*) FROM jobyard_actions WHERE status = 'succeeded'")
            jobs_done = await db.fetchval("SELECT count(*) FROM jobyard_jobs WHERE status = 'succeeded'")
        finally:
            await db.close()
    if (done, jobs_done) != (len(ids), args.jobs):
        raise RuntimeError(f"{done} of {len(ids)} actions and {jobs_done} of {args.jobs} jobs succeeded")
    result: dict[str, Any] = {
        "jobs": args.jobs,
        "actions_per_job": args.actions,
        "batch": args.batch,
        "backlog": args.backlog,
        "succeeded": done,
        "postgresql_cpu_us_per_action": round(pg_all / len(ids) * 1e6, 1),
        "client_cpu_us_per_action": round(me / len(ids) * 1e6, 1),
        "claim_ms_per_statement": round(wall["claim"] / len(batches) * 1000, 3),
        "completion_ms_per_statement": round(wall["completion"] / len(batches) * 1000, 3),
    }
    if args.backlog:
        for kind in ("claim", "completion"):
            result[f"{kind}_postgresql_cpu_ms_per_statement"] = round(pg[kind] / len(batches) * 1000, 3)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hot_statements", description=__doc__.splitlines()[0])
    add_store_arguments(p)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--actions", type=int, default=10, help="actions per job")
    p.add_argument("--batch", type=int, default=20, help="actions per claim and per completion")
    p.add_argument(
        "--backlog", action="store_true", help="claim every batch before completing any (all actions running at once)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return print_result(asyncio.run(measure(parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
