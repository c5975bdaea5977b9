"""Actions for the chaos suite: each records its (action_id, attempt) in PostgreSQL before returning.

Side effects are compared with recorded completions: at-least-once execution, exactly-once recording.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import asyncpg

from jobyard import ActionContext, Yard

yard = Yard("chaos")
_pools: dict[str, asyncpg.Pool] = {}
_pool_lock = asyncio.Lock()

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    run_id uuid PRIMARY KEY,  -- one execution of the handler: its own insert retries cannot count twice
    action_id uuid NOT NULL,
    attempt integer NOT NULL,
    worker text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def _pool() -> asyncpg.Pool:
    dsn = os.environ["CHAOS_DSN"]
    async with _pool_lock:  # hundreds of actions start at once: create one pool, not one each
        pool = _pools.get(dsn)
        if pool is None:
            pool = _pools[dsn] = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    return pool


@yard.action("chaos.effect", max_attempts=10, timeout=60)
async def effect(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``ms`` milliseconds, then record this attempt's side effect (retrying while PostgreSQL restarts).

    The insert is idempotent per execution (``run_id``): when PostgreSQL goes down after committing it but before
    answering, the retry must not look like a second execution. Two executions of one attempt still show.
    """
    await asyncio.sleep(float(payload.get("ms", 50)) / 1000)
    run_id = uuid.uuid4()
    for delay in (0.2, 0.5, 1, 2, 4, 8):
        try:
            pool = await _pool()
            await pool.execute(
                "INSERT INTO chaos_effects (run_id, action_id, attempt, worker) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (run_id) DO NOTHING",
                run_id,
                ctx.action_id,
                ctx.attempt,
                ctx.worker_id,
            )
            break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(delay)
    else:
        raise RuntimeError("could not record the side effect")
    return {"attempt": ctx.attempt}


@yard.action("chaos.crash", max_attempts=3, timeout=60)
async def crash(ctx: ActionContext, payload: Any) -> None:
    """Kill the worker process running it, every time (a poison action)."""
    os.kill(os.getpid(), signal.SIGKILL)
