"""Counting, for every accepted action: lost, recorded twice, stuck; and side effects versus completions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from uuid import UUID

import asyncpg


@dataclass
class Counts:
    accepted: int = 0
    lost: int = 0  # accepted but missing from the store, or recorded as succeeded without ever having run
    recorded_twice: int = 0  # a job counter off from its actions' final states, or one attempt run twice
    stuck: int = 0  # not final after the drain
    succeeded: int = 0
    effects: int = 0  # side effects seen (≥ succeeded: at-least-once execution)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.recorded_twice == 0 and self.stuck == 0

    def line(self, name: str) -> str:
        return f"{name}: {json.dumps(asdict(self))}"


async def audit(dsn: str, job_ids: list[str], expected_actions: int) -> Counts:
    conn = await asyncpg.connect(dsn)
    try:
        ids = [UUID(j) for j in job_ids]
        actions = await conn.fetch(
            "SELECT id, job_id, status, attempt FROM jobyard_actions WHERE job_id = ANY($1::uuid[])", ids
        )
        jobs = await conn.fetch(
            "SELECT id, total, succeeded, failed, cancelled, status FROM jobyard_jobs WHERE id = ANY($1::uuid[])", ids
        )
        effects = await conn.fetch(
            "SELECT action_id, attempt, count(*) AS n FROM chaos_effects WHERE action_id = ANY($1::uuid[]) "
            "GROUP BY action_id, attempt",
            [a["id"] for a in actions],
        )
    finally:
        await conn.close()
    counts = Counts(accepted=expected_actions)
    counts.lost = expected_actions - len(actions) + (len(job_ids) - len(jobs))
    effected = {e["action_id"] for e in effects}
    counts.effects = sum(e["n"] for e in effects)
    counts.recorded_twice = sum(1 for e in effects if e["n"] > 1)
    final = {"succeeded", "failed", "cancelled"}
    per_job: dict[UUID, dict[str, int]] = {}
    for action in actions:
        if action["status"] not in final:
            counts.stuck += 1
            continue
        per_job.setdefault(action["job_id"], {"succeeded": 0, "failed": 0, "cancelled": 0})[action["status"]] += 1
        if action["status"] == "succeeded":
            counts.succeeded += 1
            if action["id"] not in effected:
                counts.lost += 1
    for job in jobs:
        seen = per_job.get(job["id"], {"succeeded": 0, "failed": 0, "cancelled": 0})
        counts.recorded_twice += sum(abs(job[k] - seen[k]) for k in ("succeeded", "failed", "cancelled"))
    return counts
