"""The PostgreSQL hot path keeps to primary-key plans whatever the planner estimates (queries.py, "Plans").

Claims and completions name their actions by id. Before, the planner could serve the claim from the partial index
of queued actions and the completion from that of running ones (walking every queued or running action per call)
or from a sequential scan chosen while the table was tiny and then kept in the connection's plan cache.
"""

from __future__ import annotations

import uuid

import pytest

from jobyard.config import Settings
from jobyard.store import create_repository
from jobyard.store import queries as q
from tests import services
from tests.processes import fresh_database


def _array(values: list[object], sql_type: str) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + f"]::{sql_type}"


@pytest.mark.parametrize("sizes", [(200, 60), (20_000, 2_000)], ids=["small", "backlog"])
@pytest.mark.parametrize("analyzed", [False, True], ids=["unanalysed", "analysed"])
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_claims_and_completions_find_their_actions_by_primary_key(
    sizes: tuple[int, int], analyzed: bool, mode: str
) -> None:
    services.require("postgresql")
    url = await fresh_database(f"{services.PG_DB_PREFIX}_plans")
    repo = create_repository(Settings(database_url=url))
    await repo.migrate()
    queued, running = sizes
    try:
        async with repo._driver() as db:  # the hot path's own connection, with its session settings
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
            to_claim = [
                r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE status = 'queued' LIMIT 40")
            ]
            to_complete = [
                r["id"] for r in await db.fetch("SELECT id FROM jobyard_actions WHERE status = 'running' LIMIT 40")
            ]
            n = len(to_complete)
            await db.execute(f"SET plan_cache_mode = {mode}")
            try:
                await db.execute("PREPARE jy_claim AS " + q.PG_CLAIM_ACTIONS)
                await db.execute("PREPARE jy_complete AS " + q.PG_COMPLETE_ACTIONS)
                claim = await db.fetch(f"EXPLAIN EXECUTE jy_claim({_array(to_claim, 'uuid[]')}, 'w-1', 30)")
                arguments = ", ".join(
                    [
                        _array(to_complete, "uuid[]"),
                        _array([1] * n, "int[]"),
                        _array(["succeeded"] * n, "text[]"),
                        _array(["null"] * n, "text[]"),
                        _array([""] * n, "text[]"),
                        _array([0.0] * n, "float8[]"),
                        _array(["default"] * n, "text[]"),
                        _array([""] * n, "bytea[]"),
                    ]
                )
                complete = await db.fetch(f"EXPLAIN EXECUTE jy_complete({arguments})")
            finally:
                await db.execute("DEALLOCATE ALL")
                await db.execute("RESET plan_cache_mode")
    finally:
        await repo.close()
    for name, rows in (("claim", claim), ("completion", complete)):
        plan = "\n".join(r[0] for r in rows)
        assert "jobyard_actions_pkey" in plan, f"{name}:\n{plan}"
        for wrong in ("ix_jobyard_actions_due", "ix_jobyard_actions_lease", "Seq Scan on jobyard_actions"):
            assert wrong not in plan, f"{name} uses {wrong}:\n{plan}"
