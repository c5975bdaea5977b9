"""Demo actions, loaded when ``JOBYARD_APP`` is unset: enough to try every path of the system."""

from __future__ import annotations

import asyncio
from typing import Any

from jobyard.sdk import ActionContext, Yard

yard = Yard("demo")


@yard.action("demo.noop")
async def noop(ctx: ActionContext, payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


@yard.action("demo.sleep")
async def sleep(ctx: ActionContext, payload: Any) -> dict[str, Any]:
    """Sleep for ``{"seconds": s}`` (default 1), reporting progress about ten times."""
    seconds = float((payload or {}).get("seconds", 1.0))
    steps = max(1, min(10, int(seconds * 10)))
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        ctx.check_cancelled()
        ctx.progress(step / steps, f"slept {seconds * step / steps:.1f}s of {seconds:.1f}s")
    return {"slept": seconds}


class FlakyError(RuntimeError):
    """The failure demo.flaky raises on purpose."""


@yard.action("demo.flaky", max_attempts=5)
async def flaky(ctx: ActionContext, payload: Any) -> dict[str, Any]:
    """Fail on the first ``{"fail_times": n}`` attempts (default 1), then succeed."""
    fail_times = int((payload or {}).get("fail_times", 1))
    if ctx.attempt <= fail_times:
        raise FlakyError(f"failing on purpose: attempt {ctx.attempt} of the first {fail_times}")
    return {"succeeded_on_attempt": ctx.attempt}


@yard.action("demo.fail")
async def fail(ctx: ActionContext, payload: Any) -> None:
    """Always raise (to see retries, a failed job and the dead-letter list)."""
    message = "this action always fails"
    if isinstance(payload, dict):
        message = str(payload.get("message", message))
    elif isinstance(payload, str):
        message = payload
    raise FlakyError(message)
