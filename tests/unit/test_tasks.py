"""Stopping background tasks: one that swallows its cancellation must still end, or be left; never awaited forever."""

from __future__ import annotations

import asyncio
import logging

import pytest

from jobyard.tasks import raise_if_cancelling, stop_tasks


async def _swallows_once_then_checks(log: list[str]) -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        log.append("swallowed")
    raise_if_cancelling()
    await asyncio.sleep(10)


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again_until_it_ends() -> None:
    seen: list[str] = []

    async def swallows_twice() -> None:
        for _ in range(2):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("swallowed")
        await asyncio.sleep(10)

    task = asyncio.create_task(swallows_twice())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task]), 5)
    assert task.cancelled() and seen == ["swallowed", "swallowed"]


async def test_a_task_that_never_stops_is_left_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("swallowed")  # carry on, as redis-py's error plus our "log and go on" amounted to

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="jobyard.tasks"):
        await asyncio.wait_for(stop_tasks([task], timeout=0.5), 5)
    assert not task.done() and len(seen) >= 2
    assert "stubborn did not stop" in caplog.text
    release.set()  # the test's own clean-up
    task.cancel()
    await asyncio.wait_for(task, 5)


async def test_raise_if_cancelling_turns_a_swallowed_cancellation_back_into_one() -> None:
    seen: list[str] = []
    task = asyncio.create_task(_swallows_once_then_checks(seen))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert seen == ["swallowed"]


async def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails(), name="failing")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="jobyard.tasks"):
        await stop_tasks([task, None])
    assert "failing had failed" in caplog.text
