"""The actions jobyard runs in the benchmark: the same no-op and start-stamp the peers run.

Loaded by the benchmark's worker processes through ``JOBYARD_APP=benchmarks.jobyard_app:yard``.
"""

from __future__ import annotations

import time
from typing import Any

from jobyard import Yard

yard = Yard("bench")


@yard.action("bench.noop", queue="bench")
async def noop(payload: Any) -> Any:
    """Do nothing and hand the payload back as the result (the peers' noop does the same)."""
    return payload


@yard.action("bench.stamp", queue="bench")
async def stamp(payload: Any) -> dict[str, Any]:
    """Record the wall-clock time the action started, for submit-to-start latency."""
    return {"started_at": time.time(), "payload": payload}
