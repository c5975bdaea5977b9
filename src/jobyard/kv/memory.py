"""In-memory KV for embedded mode and unit tests: TTLs on a monotonic clock, pub/sub on asyncio queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from jobyard.kv.base import HEARTBEAT, RateDecision, SubscriptionWatch, Writes
from jobyard.kv.scripts import GCRA_ROUNDING_MS as ROUNDING_MS


class MemoryKV:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[tuple[str, bytes]]]] = {}

    def _alive(self, key: str) -> tuple[bytes, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= self._clock():
            del self._data[key]
            return None
        return item

    async def get(self, key: str) -> bytes | None:
        item = self._alive(key)
        return item[0] if item else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        if self._alive(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def lookup_or_fill(
        self, key: str, generation_key: str, fill_prefix: str, token: bytes, ttl: float
    ) -> tuple[bytes | None, bytes, bool]:
        # As kv.scripts.LOOKUP_OR_FILL.
        raw, generation = await self.get(key), await self.get(generation_key) or b"0"
        if raw is not None and raw.startswith(generation + b":"):
            return raw[len(generation) + 1 :], generation, False
        return None, generation, await self.set_nx(fill_prefix + generation.decode(), token, ttl)

    async def release_if_owner(self, key: str, token: bytes) -> bool:
        item = self._alive(key)
        if item is None or item[0] != token:
            return False
        del self._data[key]
        return True

    async def set_and_release(self, key: str, value: bytes, ttl: float, lock: str, token: bytes) -> None:
        await self.release_if_owner(lock, token)  # the lock first, as the script does
        await self.set(key, value, ttl)

    async def extend_if_owner(self, key: str, token: bytes, ttl: float) -> bool:
        item = self._alive(key)
        if item is None or item[0] != token:
            return False
        self._data[key] = (item[0], self._clock() + ttl)
        return True

    async def incr(self, key: str, ttl: float) -> int:
        item = self._alive(key)
        value = int(item[0]) + 1 if item else 1
        self._data[key] = (str(value).encode(), self._clock() + ttl)
        return value

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> RateDecision:
        # The same arithmetic as kv.scripts.GCRA, in milliseconds.
        now = self._clock() * 1000
        interval_ms, tolerance = interval * 1000, interval * 1000 * burst
        item = self._alive(key)
        ahead = max(float(item[0]) - now, 0.0) if item else 0.0  # how far the TAT is ahead of now
        after = ahead + interval_ms * cost  # ... once this request is admitted
        wait = after - tolerance
        if wait > ROUNDING_MS:
            return RateDecision(False, 0, wait / 1000, ahead / 1000)
        self._data[key] = (repr(now + after).encode(), self._clock() + max(0.001, after / 1000))
        return RateDecision(True, max(0, int((tolerance - after) // interval_ms)), 0.0, after / 1000)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._data[key] = (bytes(value), self._clock() + ttl)

    async def delete(self, *keys: str) -> int:
        return sum(1 for key in keys if self._alive(key) and self._data.pop(key, None) is not None)

    async def ttl(self, key: str) -> float | None:
        item = self._alive(key)
        return None if item is None else item[1] - self._clock()

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in self._subscribers.get(channel, ()):
            queue.put_nowait((channel, message))

    async def apply(self, writes: Writes) -> None:
        for key, value, ttl in writes.sets:
            await self.set(key, value, ttl)
        for key, ttl in writes.incrs:
            await self.incr(key, ttl)
        for channel, message in writes.publishes:
            await self.publish(channel, message)

    async def subscribe(
        self, *channels: str, watch: SubscriptionWatch | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for channel in channels:
            self._subscribers.setdefault(channel, set()).add(queue)
        try:
            if watch is None:
                while True:
                    yield await queue.get()
            watch.subscribed()
            while True:
                if queue.empty():  # every message published until now has been handled
                    watch.heard(time.monotonic())
                try:
                    async with asyncio.timeout(HEARTBEAT):
                        item = await queue.get()
                except TimeoutError:
                    continue
                yield item
        finally:
            for channel in channels:
                subs = self._subscribers.get(channel)
                if subs is not None:
                    subs.discard(queue)
                    if not subs:
                        del self._subscribers[channel]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    def flush(self) -> None:
        self._data.clear()
