"""Background tasks that stop when told to, even when a client library swallows their cancellation.

redis-py can turn a cancellation that lands inside a command into a connection error (which our loops catch, log
and carry on from), and Python 3.11's ``asyncio.wait_for`` drops one that races with its result. A single
``task.cancel()`` followed by ``await task`` then waits forever: a process that never shuts down, a test run that
hangs. ``stop_tasks`` repeats the cancellation until the task ends; loops that catch broad errors also call
``raise_if_cancelling`` after each step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("jobyard.tasks")

RECANCEL_EVERY = 0.1


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a client library swallowed, so ``task.cancel()`` always stops the caller."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any] | None], timeout: float = 10.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that shrugged it off.

    A task still running after ``timeout`` seconds is logged and left behind rather than waited for forever.
    Exceptions the tasks ended with are logged, not raised: stopping must not fail half way.
    """
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            for task in pending:
                log.warning("task %s did not stop within %gs of being cancelled; leaving it", task.get_name(), timeout)
            break
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY, remaining))
    for task in given:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed: %r", task.get_name(), task.exception())
