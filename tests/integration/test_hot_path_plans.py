"""The PostgreSQL hot path keeps to primary-key plans whatever the planner estimates (queries.py, "Plans").

Claims and completions name their actions by id. Before, the planner could serve the claim from the partial index
of queued actions and the completion from that of running ones (walking every queued or running action per call)
or from a sequential scan chosen while the table was tiny and then kept in the connection's plan cache.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from jobyard.config import Settings
from jobyard.store import create_repository
from jobyard.store import queries as q
from tests import services
from tests.processes import fresh_database


def _array(values: list[object], sql_type: str) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + f"]::{sql_type}"


def _successes(ids: list[object]) -> str:
    """The completion statement's arguments for first attempts of ``ids`` that succeeded."""
    n = len(ids)
    return ", ".join(
        [
            _array(ids, "uuid[]"),
            _array([1] * n, "int[]"),
            _array(["succeeded"] * n, "text[]"),
            _array(["null"] * n, "text[]"),
            _array([""] * n, "text[]"),
            _array([0.0] * n, "float8[]"),
            _array(["default"] * n, "text[]"),
            _array([""] * n, "bytea[]"),
        ]
    )


@contextlib.asynccontextmanager
async def _hot_path(mode: str) -> AsyncIterator[asyncpg.Connection]:
    """A hot-path connection (its session settings) to a fresh, migrated database, with ``plan_cache_mode``."""
    services.require("postgresql")
    url = await fresh_database(f"{services.PG_DB_PREFIX}_plans")
    repo = create_repository(Settings(database_url=url))
    await repo.migrate()
    try:
        async with repo._driver() as db:
            await db.execute(f"SET plan_cache_mode = {mode}")
            try:
                yield db
            finally:
                await db.execute("DEALLOCATE ALL")
                await db.execute("RESET plan_cache_mode")
    finally:
        await repo.close()


async def _rolled_back(db: asyncpg.Connection, *queries: str) -> list[list[asyncpg.Record]]:
    """Each query's rows, all in one transaction that is rolled back (what they wrote is not kept)."""
    transaction = db.transaction()
    await transaction.start()
    try:
        return [await db.fetch(query) for query in queries]
    finally:
        await transaction.rollback()


def _plan(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """The root node of an ``EXPLAIN (ANALYZE, FORMAT JSON)``."""
    value = rows[0][0]
    return (json.loads(value) if isinstance(value, str) else value)[0]["Plan"]  # type: ignore[no-any-return]


EXPLAIN = "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "


@pytest.mark.parametrize("sizes", [(200, 60), (20_000, 2_000)], ids=["small", "backlog"])
@pytest.mark.parametrize("analyzed", [False, True], ids=["unanalysed", "analysed"])
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_claims_and_completions_find_their_actions_by_primary_key(
    sizes: tuple[int, int], analyzed: bool, mode: str
) -> None:
    queued, running = sizes
    async with _hot_path(mode) as db:  # the hot path's own connection, with its session settings
        job = uuid.uuid4()
        await db.execute(
            "INSERT INTO jobyard_jobs (id, metadata, status, total, created_at, updated_at)"
            " VALUES ($1, '{}', 'running', $2, now(), now())",
            job,
            queued + running,
        )
        await db.execute(
            """
            INSERT INTO jobyard_actions (id, job_id, seq, type, queue, status, attempt, max_attempts, timeout,
                                         available_at, created_at, updated_at, lease_expires_at)
            SELECT gen_random_uuid(), $1, g, 'demo.noop', 'default',
                   CASE WHEN g <= $2::int THEN 'queued' ELSE 'running' END,
                   CASE WHEN g <= $2::int THEN 0 ELSE 1 END, 3, 60, now(), now(), now(),
                   CASE WHEN g <= $2::int THEN NULL ELSE now() + interval '1 minute' END
            FROM generate_series(1, $2::int + $3::int) AS g
            """,
            job,
            queued,
            running,
        )
        if analyzed:
            await db.execute("ANALYZE jobyard_jobs, jobyard_actions")
        to_claim = [r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE status = 'queued' LIMIT 40")]
        to_complete = [
            r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE status = 'running' LIMIT 40")
        ]
        await db.execute("PREPARE jy_claim AS " + q.PG_CLAIM_ACTIONS)
        await db.execute("PREPARE jy_complete AS " + q.PG_COMPLETE_ACTIONS)
        claim = await db.fetch(f"EXPLAIN EXECUTE jy_claim({_array(to_claim, 'uuid[]')}, 'w-1', 30)")
        complete = await db.fetch(f"EXPLAIN EXECUTE jy_complete({_successes(to_complete)})")
    for name, rows in (("claim", claim), ("completion", complete)):
        plan = "\n".join(r[0] for r in rows)
        assert "jobyard_actions_pkey" in plan, f"{name}:\n{plan}"
        for wrong in ("ix_jobyard_actions_due", "ix_jobyard_actions_lease", "Seq Scan on jobyard_actions"):
            assert wrong not in plan, f"{name} uses {wrong}:\n{plan}"


def _rows_visited(node: dict[str, Any], table: str) -> int:
    """The most rows any scan of ``table`` in this plan tree produced or filtered out (per loop, times loops)."""
    here = 0
    if node.get("Relation Name") == table and node.get("Node Type") != "ModifyTable":
        loops = node.get("Actual Loops", 1)
        here = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
    return max([here, *(_rows_visited(child, table) for child in node.get("Plans", []))])


@pytest.mark.parametrize("analyzed", [False, True], ids=["unanalysed", "analysed"])
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_claims_and_completions_visit_only_their_own_jobs_and_actions(analyzed: bool, mode: str) -> None:
    # The claim once updated its jobs with ``id IN (SELECT job_id FROM claimed)``, which the planner ran as a join
    # over the whole primary key index of jobyard_jobs whenever the table looked small: every claim read every
    # job stored. The completion, believing one action of the batch still running, joined them by a nested loop:
    # for each action, every outcome of the batch (or, given no array of ids, every action stored).
    async with _hot_path(mode) as db:
        await db.execute(
            """
            WITH j AS (
                INSERT INTO jobyard_jobs (id, metadata, status, total, created_at, updated_at)
                SELECT gen_random_uuid(), '{}', 'pending', 2, now(), now() FROM generate_series(1, 400)
                RETURNING id
            )
            INSERT INTO jobyard_actions (id, job_id, seq, type, queue, status, attempt, max_attempts, timeout,
                                         available_at, created_at, updated_at)
            SELECT gen_random_uuid(), j.id, s, 'demo.noop', 'default', 'queued', 0, 3, 60, now(), now(), now()
            FROM j, generate_series(0, 1) AS s
            """
        )
        if analyzed:  # while every action is queued, as in a deployment analysed before a burst
            await db.execute("ANALYZE jobyard_jobs, jobyard_actions")
        # a full batch: the 200 actions of 100 jobs; every other action is running meanwhile
        jobs = [r["id"] for r in await db.fetch("SELECT id FROM jobyard_jobs ORDER BY id LIMIT 100 OFFSET 150")]
        ids = [r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE job_id = ANY($1)", jobs)]
        others = [r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE job_id <> ALL($1)", jobs)]
        await db.fetch(q.PG_CLAIM_ACTIONS, others, "w-0", 30)
        await db.execute("PREPARE jy_claim AS " + q.PG_CLAIM_ACTIONS)
        await db.execute("PREPARE jy_complete AS " + q.PG_COMPLETE_ACTIONS)
        claim, complete, statuses = await _rolled_back(
            db,
            f"{EXPLAIN}jy_claim({_array(ids, 'uuid[]')}, 'w-1', 30)",
            f"{EXPLAIN}jy_complete({_successes(ids)})",
            f"SELECT DISTINCT status FROM jobyard_jobs WHERE id = ANY({_array(jobs, 'uuid[]')})",
        )
    # the statements did their work: the jobs went through running to succeeded
    assert [r["status"] for r in statuses] == ["succeeded"]
    for name, rows in (("claim", claim), ("completion", complete)):
        root = _plan(rows)
        shown = json.dumps(root, indent=1)
        assert _rows_visited(root, "jobyard_jobs") <= len(jobs), f"{name} read more jobs than its own:\n{shown}"
        assert _rows_visited(root, "jobyard_actions") <= len(ids), f"{name} read more actions than its own:\n{shown}"


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_taking_domain_events_reads_only_their_own_jobs(mode: str) -> None:
    # The relay's statement once joined the events it took to jobyard_jobs for the completed jobs' webhook URLs,
    # and the planner hashed every job stored (400 here) to find a batch's few.
    async with _hot_path(mode) as db:
        await db.execute(
            """
            WITH j AS (
                INSERT INTO jobyard_jobs (id, metadata, status, total, created_at, updated_at, webhook_url)
                SELECT gen_random_uuid(), '{}', 'succeeded', 1, now(), now(),
                       CASE WHEN g % 2 = 0 THEN 'http://hooks.example/' || g END
                FROM generate_series(1, 400) AS g
                RETURNING id
            )
            INSERT INTO jobyard_events (event_id, type, tenant_id, job_id, data, created_at)
            SELECT gen_random_uuid(), t, 'default', j.id, '{}', now()
            FROM (SELECT id FROM j LIMIT 10) AS j, unnest(ARRAY['job.ready', 'job.completed']) AS t
            """
        )
        await db.execute("ANALYZE jobyard_jobs, jobyard_events")
        urls = {r["id"]: r["webhook_url"] for r in await db.fetch("SELECT id, webhook_url FROM jobyard_jobs")}
        await db.execute("PREPARE jy_events AS " + q.PG_TAKE_EVENTS)
        (taken,) = await _rolled_back(db, "EXECUTE jy_events(500)")  # what it returns
        (plan,) = await _rolled_back(db, f"{EXPLAIN}jy_events(500)")  # and how it finds it
    assert sorted(r["type"] for r in taken) == ["job.completed"] * 10 + ["job.ready"] * 10
    for row in taken:  # a job.completed row carries its job's own URL (or none); other events none
        assert row["webhook_url"] == (urls[row["job_id"]] if row["type"] == "job.completed" else None)
    assert any(row["webhook_url"] for row in taken)
    root = _plan(plan)
    shown = json.dumps(root, indent=1)
    assert _rows_visited(root, "jobyard_jobs") <= 10, f"taking events read more jobs than theirs:\n{shown}"
