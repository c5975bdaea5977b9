"""Live status: the event hub, worker presence and queue sampling (what streams and the dashboard show)."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a client library swallowed (redis-py can turn one into a connection error).

    Loops that catch errors to keep going call this after each step, so ``task.cancel()`` always stops them.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
