"""Group commit for submissions: calls that arrive while one is in flight go to the database together.

A submission is one statement and one commit (the job, its actions, their outbox rows, its event and audit
row). Under load most of PostgreSQL's cost per submission is the statement and the commit, not the rows: eight
jobs of ten actions in one statement cost PostgreSQL less than half the CPU per job that eight statements do, and
the API process too (``python -m benchmarks.group_commit``, ``benchmarks/RESULTS.md``).
A batch of jobs (``POST /api/jobs:batch``) is one submission: its jobs always share a statement, and so its fate.
``Coalescer`` runs the first call at once, in the caller's own task, so a lone submission waits for nothing;
the calls that arrive while it is in flight wait for it and then go in one statement, and so on. Each job stays
all or nothing (a batch is one transaction); a batch the store refuses for what it would write (a value too long,
a constraint broken) is retried one call at a time, so one bad submission fails alone; any other error (an outage)
fails the calls of the batch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("jobyard.store")

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Runs ``run(key, items)`` (one result per item, in order) for items submitted while a run is in flight.

    Items with different keys (compared with ``==``) never share a run. ``size(item)`` weighs an item against
    ``max_weight`` per run (a run takes at least one item). ``alone(exc)`` says whether a failed run of several
    items is retried one item at a time (the error is about the data) or fails them all (the database is
    unreachable, say). Every waiting call gets its result or an error: ``gone()`` is the error of those whose run
    was stopped (the process shutting down), so they do not see a cancellation they did not ask for.
    """

    def __init__(
        self,
        run: Callable[[object, Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        size: Callable[[Item], int] = lambda _item: 1,
        max_weight: int = 10_000,
        alone: Callable[[Exception], bool] = lambda _exc: True,
        gone: Callable[[], Exception] = lambda: RuntimeError("stopped before the submission was written"),
    ) -> None:
        self._run = run
        self._size = size
        self._max_weight = max_weight
        self._alone = alone
        self._gone = gone
        self._busy = False  # a run is in flight: new calls wait for the next one
        self._idle = asyncio.Event()  # set while not busy
        self._idle.set()
        self._waiting: list[tuple[object, Item, asyncio.Future[Result]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.runs = 0  # runs that succeeded, and the items they carried: the batch size achieved
        self.items = 0

    async def submit(self, key: object, item: Item) -> Result:
        if self._busy:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            self._waiting.append((key, item, future))
            return await future
        self._busy = True
        self._idle.clear()
        try:
            result = (await self._run(key, [item]))[0]
            self.runs += 1
            self.items += 1
            return result
        finally:
            self._next()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until no run is in flight or due; before closing what the runs use."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _next(self) -> None:
        """A run is over: the next one starts (in a task of its own) if calls are waiting, else none is busy."""
        if not self._waiting:
            self._busy = False
            self._idle.set()
            return
        task = asyncio.get_running_loop().create_task(self._run_waiting(), name="jobyard-submit-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> tuple[object, list[tuple[Item, asyncio.Future[Result]]]]:
        """The next run: the oldest waiting call's key, and its fellows with that key up to ``max_weight``."""
        key = self._waiting[0][0]
        taken: list[tuple[Item, asyncio.Future[Result]]] = []
        left: list[tuple[object, Item, asyncio.Future[Result]]] = []
        weight = 0
        for entry in self._waiting:
            k, item, future = entry
            if future.done():  # its caller was cancelled while it waited: nothing to write
                continue
            if k == key and (not taken or weight + self._size(item) <= self._max_weight):
                taken.append((item, future))
                weight += self._size(item)
            else:
                left.append(entry)
        self._waiting = left
        return key, taken

    async def _run_waiting(self) -> None:
        taken: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            key, taken = self._take()
            if taken:
                await self._run_batch(key, taken)
        finally:
            for _, future in taken:  # whatever happened (a bug, the task stopped), nobody is left waiting
                if not future.done():
                    future.set_exception(self._gone())
            self._next()

    async def _run_batch(self, key: object, taken: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run(key, [item for item, _ in taken])
        except Exception as exc:
            if len(taken) > 1 and self._alone(exc):
                log.info("a batch of %d submissions failed (%s); writing them one by one", len(taken), exc)
                await self._one_by_one(key, taken)
                return
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        self.runs += 1
        self.items += len(taken)
        for (_, future), result in zip(taken, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _one_by_one(self, key: object, taken: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """After a failed batch: each item in a run of its own, until an error that is not about the data."""
        for index, (item, future) in enumerate(taken):
            if future.done():  # its caller went away meanwhile: nothing to write
                continue
            try:
                result = (await self._run(key, [item]))[0]
            except Exception as exc:
                if self._alone(exc):
                    future.set_exception(exc)
                    continue
                for _, rest in taken[index:]:  # an outage: the rest would only fail the same way, one by one
                    if not rest.done():
                        rest.set_exception(exc)
                return
            self.runs += 1
            self.items += 1
            future.set_result(result)
