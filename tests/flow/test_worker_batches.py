"""A busy worker that is behind gathers its claims and completions (``worker_batch_interval``); others never wait.

Behind: work arrived while its previous claim (or completion) was in flight. The tests make a worker behind by
holding its first claim (or completion) until the next job (or outcome) has reached the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobyard.errors import BrokerUnavailable
from jobyard.sdk import Yard
from tests.harness import Stack, stack

yard = Yard("batches")


@yard.action("t.noop")
async def noop(payload: Any) -> Any:
    return payload


@yard.action("t.sleep")
async def sleep(payload: float) -> float:
    await asyncio.sleep(payload)
    return payload


Calls = list[tuple[float, int]]  # (time.monotonic() of the call, actions in it)


def _record(
    s: Stack,
    monkeypatch: pytest.MonkeyPatch,
    *,
    hold_first_claim: asyncio.Event | None = None,
    hold_first_completion: asyncio.Event | None = None,
) -> tuple[Calls, Calls]:
    """Every claim and completion the workers send: when, and how many actions each held.

    ``hold_first_claim`` (``hold_first_completion``): the first claim (completion) waits for this event before it
    reaches the store, so what arrives meanwhile finds the worker behind.
    """
    repo = s.runtime.repo
    claims: Calls = []
    completions: Calls = []

    def spy(
        calls: Calls, original: Callable[..., Awaitable[Any]], hold: asyncio.Event | None
    ) -> Callable[..., Awaitable[Any]]:
        async def recorded(items: list[Any], *args: Any, **kwargs: Any) -> Any:
            if items:  # the relay's reaper also calls, mostly with nothing to record
                calls.append((time.monotonic(), len(items)))
                if len(calls) == 1 and hold is not None:
                    await hold.wait()
            return await original(items, *args, **kwargs)

        return recorded

    monkeypatch.setattr(repo, "claim_actions", spy(claims, repo.claim_actions, hold_first_claim))
    monkeypatch.setattr(repo, "complete_actions", spy(completions, repo.complete_actions, hold_first_completion))
    return claims, completions


async def _release_when(hold: asyncio.Event, condition: Callable[[], bool]) -> None:
    """Let a held claim or completion go once ``condition`` holds (what it waited for has reached the worker)."""
    await _until(condition)
    hold.set()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _batches(metrics: str, stage: str) -> dict[str, float]:
    """``jobyard_worker_batch_actions`` for one stage: its count, its sum and three of its buckets."""
    wanted = {"_count": "count", "_sum": "sum", '_bucket{le="5.0",': "le_5", '_bucket{le="10.0",': "le_10"}
    wanted['_bucket{le="20.0",'] = "le_20"
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        if not line.startswith("jobyard_worker_batch_actions") or f'stage="{stage}"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        for part, key in wanted.items():
            if name.startswith("jobyard_worker_batch_actions" + part):
                found[key] = float(value)
    return found


def _noops(count: int, tag: str) -> list[dict[str, Any]]:
    return [{"type": "t.noop", "payload": f"{tag}{i}"} for i in range(count)]


async def test_a_busy_worker_that_is_behind_gathers_what_arrives_within_the_interval_into_one_claim(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(make_settings(worker_batch_interval=1.0), yard) as s:
        hold = asyncio.Event()
        claims, completions = _record(s, monkeypatch, hold_first_claim=hold)
        worker = s.workers[0]
        first = await s.submit(_noops(10, "a"))  # one message of ten actions: a claim of ten, a busy worker
        await _until(lambda: len(claims) == 1)
        second = await s.submit(_noops(10, "b"))
        await _release_when(hold, lambda: worker._intake.qsize() == 10)  # it came while the claim was in flight
        await asyncio.sleep(0.3)  # the first claim is done; the second job waits for the interval to pass
        assert len(claims) == 1
        third = await s.submit(_noops(10, "c"))
        finals = [await s.wait(job_id) for job_id in (first, second, third)]
        metrics = (await s.http.get("/metrics")).text
    assert all(f["status"] == "succeeded" for f in finals)
    assert [size for _, size in claims] == [10, 20]  # the two later jobs went out together
    assert claims[1][0] - claims[0][0] >= 0.95  # ... once the interval after the first claim had passed
    assert [size for _, size in completions] == [10, 20]
    for stage in ("claim", "complete"):  # what an operator sees of it on /metrics: two batches of 10 and 20
        assert _batches(metrics, stage) == {"count": 2.0, "sum": 30.0, "le_5": 0.0, "le_10": 1.0, "le_20": 2.0}


def _gathering_deadlines(s: Stack, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """How far ahead of the moment it decided each batch of the stack's worker, claim or completion, was allowed to
    gather (0: not at all), in the order decided.

    The worker's own decision, so a test of it does not depend on how fast a loaded machine runs the rest of the
    way from submit to done (a one-second bound on that way failed once at 0.85 s with no wait taken).
    """
    worker = s.workers[0]
    decide = worker._gather_until
    ahead: list[float] = []

    def recorded(last_at: float, last_size: int, behind: bool) -> float:
        deadline = decide(last_at, last_size, behind)
        ahead.append(max(0.0, deadline - time.monotonic()))
        return deadline

    monkeypatch.setattr(worker, "_gather_until", recorded)
    return ahead


async def test_a_busy_worker_that_keeps_up_does_not_wait(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with stack(make_settings(worker_batch_interval=1.0), yard) as s:
        claims, completions = _record(s, monkeypatch)
        ahead = _gathering_deadlines(s, monkeypatch)
        await s.wait(await s.submit(_noops(10, "a")))  # a claim and a completion of ten: a busy worker
        before = len(ahead)
        # Submitted once the worker is done with the first job: nothing was waiting when its claim came back.
        await s.wait(await s.submit(_noops(10, "b")))
    assert [size for _, size in claims] == [10, 10]
    assert [size for _, size in completions] == [10, 10]
    after = ahead[before:]  # the second job's claim and completion
    assert len(after) >= 2 and set(after) == {0.0}, ahead  # at once (waiting out the interval: up to 1 s)


async def test_a_batch_that_fills_the_free_slots_goes_at_once_and_staggered_outcomes_are_gathered(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(make_settings(worker_batch_interval=1.0, worker_concurrency=10), yard) as s:
        hold_claim, hold_completion = asyncio.Event(), asyncio.Event()
        claims, completions = _record(
            s, monkeypatch, hold_first_claim=hold_claim, hold_first_completion=hold_completion
        )
        worker = s.workers[0]
        first = await s.submit(_noops(10, "a"))
        await _until(lambda: len(claims) == 1)
        # Arrives while the first claim is in flight (the worker is behind): ten actions for ten free slots are
        # claimed without waiting out the interval. They end 0 to 0.45 s apart, the first while the first
        # completion is in flight, so the completion loop is behind too and gathers the rest within its interval.
        job = await s.submit([{"type": "t.sleep", "payload": i * 0.05} for i in range(10)])
        await _release_when(hold_claim, lambda: worker._intake.qsize() == 10)
        # The first completion (the first job's ten) is under way and held; an outcome of the second has come.
        await _release_when(hold_completion, lambda: len(completions) == 1 and worker._finished.qsize() >= 1)
        finals = [await s.wait(job_id) for job_id in (first, job)]
    assert all(f["status"] == "succeeded" for f in finals)
    assert [size for _, size in claims] == [10, 10]
    assert claims[1][0] - claims[0][0] < 0.9
    assert [size for _, size in completions] == [10, 10]


async def test_a_worker_under_light_load_never_waits(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with stack(make_settings(worker_batch_interval=1.0), yard) as s:
        claims, _ = _record(s, monkeypatch)
        ahead = _gathering_deadlines(s, monkeypatch)
        for i in range(3):
            assert (await s.wait(await s.submit([{"type": "t.noop", "payload": i}])))["status"] == "succeeded"
    assert [size for _, size in claims] == [1, 1, 1]
    assert len(ahead) >= 6 and set(ahead) == {0.0}, ahead  # three claims, three completions: each at once


async def test_a_busy_worker_that_went_idle_for_the_interval_does_not_wait(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(make_settings(worker_batch_interval=1.0), yard) as s:
        claims, _ = _record(s, monkeypatch)
        ahead = _gathering_deadlines(s, monkeypatch)
        await s.wait(await s.submit(_noops(10, "busy")))
        await asyncio.sleep(1.1)
        before = len(ahead)
        await s.wait(await s.submit([{"type": "t.noop", "payload": "after"}]))
    assert [size for _, size in claims] == [10, 1]
    after = ahead[before:]  # the claim and the completion of the job after the idle spell
    assert len(after) >= 2 and set(after) == {0.0}, ahead  # at once, not a whole interval later


async def test_a_worker_stopped_while_gathering_hands_the_batch_back_and_keeps_its_slots(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(make_settings(worker_batch_interval=1.0, worker_concurrency=10), yard) as s:
        hold = asyncio.Event()
        claims, _ = _record(s, monkeypatch, hold_first_claim=hold)
        worker = s.workers[0]
        busy = await s.submit(_noops(10, "busy"))
        await _until(lambda: len(claims) == 1)
        gathering = await s.submit(_noops(3, "held"))
        await _release_when(hold, lambda: worker._intake.qsize() == 3)  # behind, three of ten slots: it gathers
        await s.wait(busy)
        await asyncio.sleep(0.1)
        assert len(claims) == 1
        await worker.stop(grace=1)
        await worker.start()
        final = await s.wait(gathering)  # its message came back to the broker and is delivered again
        later = await s.wait(await s.submit(_noops(10, "later")))
    assert final["status"] == later["status"] == "succeeded"
    assert sum(size for _, size in claims) == 23
    assert claims[-1][1] == 10  # all ten slots were free again for the last job


async def test_claims_from_the_store_while_the_broker_is_down_count_as_claim_batches(make_settings: Any) -> None:
    async with stack(make_settings(outbox_hold=30.0, poll_interval=0.05), yard) as s:
        handoff = s.runtime.handoff
        assert handoff is not None
        worker = s.workers[0]
        real = worker.broker

        class Refusing:
            connected = True

            async def publish(self, messages: Any) -> None:
                raise BrokerUnavailable("refused for this test")

        class Down:  # what the worker sees of a broker it lost: it claims due actions from the store
            connected = False

        handoff.broker = Refusing()  # type: ignore[assignment]  # the relay holds the rows for 30 s
        worker.broker = Down()  # type: ignore[assignment]
        try:
            final = await s.wait(await s.submit(_noops(3, "polled")))
        finally:
            worker.broker = real
            handoff.broker = real
        metrics = (await s.http.get("/metrics")).text
    assert final["status"] == "succeeded"
    claimed = _batches(metrics, "claim")
    assert claimed["sum"] == 3.0 and 1.0 <= claimed["count"] <= 3.0
    assert _batches(metrics, "complete")["sum"] == 3.0
