"""Queue statistics over time, sampled inside the API process: depths from the broker, throughput from events.

A ring buffer keeps the last ``SAMPLES`` samples (15 minutes at 2 s) for the dashboard's charts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from jobyard.broker.base import Broker
from jobyard.errors import JobyardError
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.live.sampler")

SAMPLE_EVERY = 2.0
SAMPLES = 450
FINAL = ("succeeded", "failed", "cancelled")


class QueueSampler:
    def __init__(
        self, broker: Broker, queues: Callable[[], Sequence[str]], every: float = SAMPLE_EVERY, size: int = SAMPLES
    ) -> None:
        self.broker = broker
        self.queues = queues
        self.every = every
        self.history: deque[dict[str, Any]] = deque(maxlen=size)
        self._done: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def count(self, data: dict[str, Any]) -> None:
        """Hub listener (an event as received): one more action finished on its queue."""
        if data.get("type") == "action.status" and data.get("status") in FINAL:
            queue = str(data.get("queue") or "?")
            self._done[queue] += 1
            if data.get("status") == "failed":
                self._failed[queue] += 1

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name="jobyard-queue-sampler")

    async def stop(self) -> None:
        """Let a sample in flight finish: cancelling a broker call midway can wedge its channel (aio-pika)."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        except TimeoutError:
            await stop_tasks([self._task])
        self._task = None

    async def sample(self) -> dict[str, Any]:
        names = sorted(set(self.queues()) | set(self._done))
        names = [n for n in names if n != "?"] or names
        try:
            depths: dict[str, int | None] = dict(await self.broker.queue_depths(names))
        except JobyardError as exc:
            log.debug("queue depths unavailable: %s", exc)
            depths = dict.fromkeys(names)
        done, failed = dict(self._done), dict(self._failed)
        self._done.clear()
        self._failed.clear()
        sample = {"t": time.time(), "depth": depths, "done": done, "failed": failed}
        self.history.append(sample)
        return sample

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.every)

    def rate(self, queue: str, seconds: float = 60.0) -> float:
        """Actions finished per second on ``queue`` over the last ``seconds``."""
        if not self.history:
            return 0.0
        cutoff = self.history[-1]["t"] - seconds
        recent = [s for s in self.history if s["t"] > cutoff]
        span = max(self.every, len(recent) * self.every)
        return round(sum(s["done"].get(queue, 0) for s in recent) / span, 2)
