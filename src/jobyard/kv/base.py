"""The KV protocol: the small set of Redis operations jobyard needs, also implemented in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

HEARTBEAT = 0.25  # seconds between a watched subscription's checks that it still works (``heard``)


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after: float  # seconds until a request of this cost would be admitted (0 when allowed)
    reset_after: float  # seconds until the bucket is full again


@dataclass(slots=True)
class Writes:
    """Several writes for one round trip (a Redis pipeline), applied in this order: sets, counters, publishes.

    The order matters to readers: a subscriber that hears a publish and then reads finds the values set and
    the cache generations bumped before it.
    """

    sets: list[tuple[str, bytes, float]] = field(default_factory=list)  # key, value, ttl seconds
    incrs: list[tuple[str, float]] = field(default_factory=list)  # key, ttl seconds
    publishes: list[tuple[str, bytes]] = field(default_factory=list)  # channel, message

    def add(self, other: Writes) -> Writes:
        self.sets.extend(other.sets)
        self.incrs.extend(other.incrs)
        self.publishes.extend(other.publishes)
        return self

    def __bool__(self) -> bool:
        return bool(self.sets or self.incrs or self.publishes)


class SubscriptionWatch(Protocol):
    """Told how a subscription fares, so a subscriber can know it has missed nothing (see ``KV.subscribe``)."""

    def subscribed(self) -> None:
        """The subscription is in place, first or again: messages published before now may have been missed."""

    def heard(self, since: float) -> None:
        """Everything published before ``since`` (a ``time.monotonic()`` reading), and after the latest
        ``subscribed``, has been delivered and handled."""


class KV(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        """Set only if absent (locks, stampede guards); True if this call set it."""

    async def lookup_or_fill(
        self, key: str, generation_key: str, fill_prefix: str, token: bytes, ttl: float
    ) -> tuple[bytes | None, bytes, bool]:
        """A generational cache lookup and, on a miss, its fill lock, in one round trip (``scripts.LOOKUP_OR_FILL``).

        ``key`` holds ``{generation}:{value}``; ``generation_key`` the current generation (absent: ``0``). Returns
        the value (without its generation) if it is of the current generation, else None; the current generation;
        and on a miss whether this call took the lock ``fill_prefix + generation`` (set to ``token`` for ``ttl``).
        """

    async def release_if_owner(self, key: str, token: bytes) -> bool: ...

    async def set_and_release(self, key: str, value: bytes, ttl: float, lock: str, token: bytes) -> None:
        """``release_if_owner(lock, token)``, then ``set(key, value, ttl)``, in one round trip."""

    async def extend_if_owner(self, key: str, token: bytes, ttl: float) -> bool: ...

    async def incr(self, key: str, ttl: float) -> int:
        """Increment a counter and (re)set its time to live."""

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> RateDecision:
        """Generic cell rate algorithm: one request per ``interval`` seconds, bursts of up to ``burst``."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store with a time to live in seconds (every jobyard key has one)."""

    async def delete(self, *keys: str) -> int: ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left, or None if the key does not exist; -1.0 if it has no expiry."""

    async def publish(self, channel: str, message: bytes) -> None: ...

    async def apply(self, writes: Writes) -> None:
        """Every write of ``writes`` in one round trip, in their order (sets, counters, publishes)."""

    def subscribe(self, *channels: str, watch: SubscriptionWatch | None = None) -> AsyncIterator[tuple[str, bytes]]:
        """Yield (channel, message) for the given channels until the iterator is closed.

        With ``watch``: ``subscribed()`` each time the subscription is confirmed (again, after a reconnect), and
        ``heard(since)`` about every ``HEARTBEAT`` seconds while it works (on Redis, when a ping down the
        subscription's connection is answered). A subscription that stops working raises.
        """

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
