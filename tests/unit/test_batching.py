"""The submissions' group commit (store/batching.py), against a stand-in for the statement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobyard.store.batching import Coalescer


class Outage(Exception):
    pass


class Statement:
    """Records each run's key and items; a run takes until ``gate`` opens; ``bad`` items fail their run."""

    def __init__(self) -> None:
        self.runs: list[tuple[object, list[int]]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.bad: set[int] = set()
        self.outage = False
        self.unreachable_for: set[int] = set()  # a run with one of these (and no bad item) meets an outage
        self.stall: set[int] = set()  # a run of one of these alone never ends (until stopped)
        self.stalled = asyncio.Event()

    async def __call__(self, key: object, items: Sequence[int]) -> list[str]:
        self.runs.append((key, list(items)))
        self.tasks.append(asyncio.current_task())
        await self.gate.wait()
        if len(items) == 1 and items[0] in self.stall:
            self.stalled.set()
            await asyncio.Event().wait()
        if self.outage:
            raise Outage("unreachable")
        if self.bad & set(items):
            raise ValueError(f"bad item among {list(items)}")
        if self.unreachable_for & set(items):
            raise Outage("unreachable")
        return [f"{key}:{item}" for item in items]


def coalescer(statement: Statement, **kwargs: object) -> Coalescer[int, str]:
    return Coalescer(statement, alone=lambda exc: not isinstance(exc, Outage), **kwargs)  # type: ignore[arg-type]


async def in_flight(
    batches: Coalescer[int, str], statement: Statement, first: tuple[object, int], *waiting: tuple[object, int]
) -> tuple[asyncio.Task[str], list[asyncio.Task[str]]]:
    """``first`` submitted and its run held in flight, then ``waiting`` submitted behind it."""
    statement.gate.clear()
    running = asyncio.create_task(batches.submit(*first))
    await asyncio.sleep(0)
    behind = [asyncio.create_task(batches.submit(key, item)) for key, item in waiting]
    await asyncio.sleep(0)
    return running, behind


async def test_a_lone_call_runs_at_once_in_its_own_task() -> None:
    statement = Statement()
    batches = coalescer(statement)
    assert await batches.submit("k", 1) == "k:1"
    assert statement.runs == [("k", [1])] and statement.tasks == [asyncio.current_task()]
    assert await batches.submit("k", 2) == "k:2"  # nothing in flight: again at once, alone
    assert statement.runs[-1] == ("k", [2]) and (batches.runs, batches.items) == (2, 2)


async def test_calls_arriving_during_a_run_go_together_in_the_next_one() -> None:
    statement = Statement()
    batches = coalescer(statement)
    first, rest = await in_flight(batches, statement, ("k", 0), *[("k", i) for i in range(1, 6)])
    assert statement.runs == [("k", [0])]  # the others wait for the run in flight
    statement.gate.set()
    assert await asyncio.gather(first, *rest) == [f"k:{i}" for i in range(6)]
    assert statement.runs == [("k", [0]), ("k", [1, 2, 3, 4, 5])]
    assert (batches.runs, batches.items) == (2, 6)


async def test_keys_never_share_a_run_and_the_weight_splits_runs() -> None:
    statement = Statement()
    batches = coalescer(statement, size=lambda item: item, max_weight=10)
    first, rest = await in_flight(batches, statement, ("a", 1), ("a", 6), ("b", 2), ("a", 5), ("a", 4))
    statement.gate.set()
    assert await asyncio.gather(first, *rest) == ["a:1", "a:6", "b:2", "a:5", "a:4"]
    # oldest key first, up to the weight (6 + 4 = 10); what is left goes in later runs
    assert statement.runs == [("a", [1]), ("a", [6, 4]), ("b", [2]), ("a", [5])]


async def test_one_bad_item_fails_alone_and_an_outage_fails_the_whole_run() -> None:
    statement = Statement()
    batches = coalescer(statement)
    statement.bad = {3}
    first, rest = await in_flight(batches, statement, ("k", 1), ("k", 2), ("k", 3), ("k", 4))
    statement.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == ["k:1", "k:2"] and isinstance(results[2], ValueError) and results[3] == "k:4"
    assert statement.runs[1:] == [("k", [2, 3, 4]), ("k", [2]), ("k", [3]), ("k", [4])]
    assert (batches.runs, batches.items) == (3, 3)  # only what was written counts: 1, then 2 and 4 alone

    statement.runs.clear()
    statement.outage = True
    first, rest = await in_flight(batches, statement, ("k", 1), ("k", 2), ("k", 4))
    statement.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(r, Outage) for r in results)
    assert statement.runs == [("k", [1]), ("k", [2, 4])]  # not retried one by one: it would only fail again


async def test_a_caller_cancelled_while_waiting_is_not_written() -> None:
    statement = Statement()
    batches = coalescer(statement)
    first, (gone, kept) = await in_flight(batches, statement, ("k", 1), ("k", 2), ("k", 3))
    gone.cancel()
    statement.gate.set()
    assert await first == "k:1" and await kept == "k:3"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert statement.runs == [("k", [1]), ("k", [3])]


async def test_waiting_calls_run_even_if_the_first_caller_goes_and_a_stopped_run_releases_them() -> None:
    statement = Statement()
    batches = coalescer(statement)
    first, (waiting,) = await in_flight(batches, statement, ("k", 1), ("k", 2))
    statement.gate.set()
    await first
    await asyncio.sleep(0)  # the waiting call's run has started, in a task of its own
    assert statement.runs[-1] == ("k", [2]) and statement.tasks[-1] is not waiting
    await batches.drain()
    assert await waiting == "k:2"

    first, (waiting,) = await in_flight(batches, statement, ("k", 3), ("k", 4))
    first.cancel()  # the caller running the first run goes away: the waiting call's run starts anyway
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0)
    assert statement.runs[-1] == ("k", [4])
    run_task = statement.tasks[-1]
    assert run_task is not None and run_task is not waiting
    run_task.cancel()  # and that run is stopped mid-way (the process shuts down): its caller gets an error
    with pytest.raises(RuntimeError, match="stopped"):  # not a cancellation it never asked for
        await waiting


async def test_an_outage_while_writing_one_by_one_fails_the_rest_untried() -> None:
    statement = Statement()
    batches = coalescer(statement)
    statement.bad, statement.unreachable_for = {3}, {4}
    first, rest = await in_flight(batches, statement, ("k", 1), ("k", 2), ("k", 3), ("k", 4), ("k", 5))
    statement.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == ["k:1", "k:2"] and isinstance(results[2], ValueError)
    assert isinstance(results[3], Outage) and isinstance(results[4], Outage)
    assert statement.runs[1:] == [("k", [2, 3, 4, 5]), ("k", [2]), ("k", [3]), ("k", [4])]  # 5 never tried


async def test_no_caller_is_left_waiting_when_a_one_by_one_retry_is_stopped() -> None:
    statement = Statement()
    batches = coalescer(statement)
    statement.bad, statement.stall = {3}, {3}
    first, rest = await in_flight(batches, statement, ("k", 1), ("k", 2), ("k", 3), ("k", 4))
    statement.gate.set()
    assert await first == "k:1" and await rest[0] == "k:2"
    await asyncio.wait_for(statement.stalled.wait(), 1.0)
    assert statement.runs[-1] == ("k", [3])
    run_task = statement.tasks[-1]
    assert run_task is not None
    run_task.cancel()  # the retry of 3 is stopped: 3 and 4, still waiting, get the error
    for waiting in rest[1:]:
        with pytest.raises(RuntimeError, match="stopped"):
            await asyncio.wait_for(waiting, 1.0)


async def test_drain_waits_for_the_runs_that_follow_the_one_in_flight() -> None:
    statement = Statement()
    batches = coalescer(statement)
    first, rest = await in_flight(batches, statement, ("a", 1), ("b", 2), ("c", 3))  # three runs, one after another
    drained = asyncio.create_task(batches.drain())
    await asyncio.sleep(0)
    statement.gate.set()
    await drained
    assert first.done() and all(call.done() for call in rest)
    assert [call.result() for call in (first, *rest)] == ["a:1", "b:2", "c:3"]
