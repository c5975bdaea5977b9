"""Actions for the browser tests: steady progress, a long wait that honours cancellation, a certain failure."""

from __future__ import annotations

import asyncio
from typing import Any

from jobyard import ActionContext, Yard

yard = Yard("e2e")


@yard.action("e2e.steps", queue="e2e")
async def steps(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Ten progress steps over ``seconds``."""
    seconds = float(payload.get("seconds", 2.0))
    for i in range(1, 11):
        await asyncio.sleep(seconds / 10)
        ctx.progress(i / 10, f"step {i} of 10")
    return {"steps": 10}


@yard.action("e2e.wait", queue="e2e")
async def wait(ctx: ActionContext, payload: dict[str, Any]) -> None:
    """Wait up to a minute, stopping early when cancelled."""
    for _ in range(600):
        ctx.check_cancelled()
        await asyncio.sleep(0.1)


@yard.action("e2e.fail", queue="e2e", max_attempts=1)
async def fail(ctx: ActionContext, payload: dict[str, Any]) -> None:
    """Always fails (a dead letter at once)."""
    raise RuntimeError("the device refused the change")
