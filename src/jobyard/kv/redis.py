"""Redis KV over redis-py asyncio, with a short circuit breaker so a dead Redis costs one timeout, not one per call.

Errors become ``KVUnavailable``; callers fall back to the store (Redis is never the only copy).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from jobyard.errors import KVError, KVUnavailable
from jobyard.kv import scripts
from jobyard.kv.base import HEARTBEAT, RateDecision, SubscriptionWatch, Writes

log = logging.getLogger("jobyard.kv.redis")


# Policies that never evict a key without a TTL... and jobyard gives every key a TTL, so only these are safe: with
# them Redis refuses writes (or evicts by TTL) instead of dropping a lock or a rate limit at random.
SAFE_EVICTION_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


def eviction_warning(policy: str | None) -> str | None:
    """A warning for a ``maxmemory-policy`` that could evict locks or rate limits (allkeys-*), else None."""
    if policy is None or policy in SAFE_EVICTION_POLICIES:
        return None
    return (
        f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict jobyard's locks and rate-limit "
        "counters early; set it to noeviction or a volatile-* policy (every jobyard key has a TTL)"
    )


def _driver_info_kwargs() -> dict[str, Any]:
    """The CLIENT SETINFO name and version, worked out once for every connection of a pool.

    redis-py 8 otherwise works out its own version for every connection it opens, by parsing its package metadata
    (0.77 ms of CPU each on the development machine, against 0.01 ms with this), and a pool opens connections exactly
    when a burst of requests needs them. A redis-py without DriverInfo reads its version once, at import.
    """
    from jobyard import __version__  # here, not at the top: jobyard's own __init__ may be importing this module

    try:
        from redis.driver_info import DriverInfo
    except ImportError:
        return {}
    return {"driver_info": DriverInfo().add_upstream_driver("jobyard", __version__)}


def _pool(url: str, socket_timeout: float, max_connections: int, **extra: Any) -> aioredis.BlockingConnectionPool:
    # A blocking pool: under a burst, callers wait for a free connection instead of failing with
    # "Too many connections" (which would look like an outage and trip the breaker).
    return aioredis.BlockingConnectionPool.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        max_connections=max_connections,
        timeout=socket_timeout,
        **_driver_info_kwargs(),
        **extra,
    )


class RedisKV:
    def __init__(self, url: str, *, socket_timeout: float = 2.0, breaker_seconds: float = 2.0) -> None:
        self._client = aioredis.Redis(connection_pool=_pool(url, socket_timeout, 64))
        # Subscriptions get connections of their own, speaking RESP2 (each holds one for as long as it lasts). Over
        # RESP3, redis-py 8 hands every pub/sub message to a push handler that formats it for a debug log even when
        # that log is off: redis-py's reading of a 5 KB batch of status events took 50-80 µs of CPU, against 20-30
        # over RESP2 (the development machine; benchmarks/RESULTS.md). An API process receives every event batch.
        # A URL that asks for a protocol (``?protocol=3``) still gets it.
        self._subscriber = aioredis.Redis(connection_pool=_pool(url, socket_timeout, 16, protocol=2))
        self._url = url
        self._socket_timeout = socket_timeout
        # Registered scripts run by EVALSHA, falling back to EVAL once after a SCRIPT FLUSH or restart.
        self._gcra = self._client.register_script(scripts.GCRA)
        self._release = self._client.register_script(scripts.RELEASE_IF_OWNER)
        self._extend = self._client.register_script(scripts.EXTEND_IF_OWNER)
        self._set_release = self._client.register_script(scripts.SET_AND_RELEASE)
        self._incr = self._client.register_script(scripts.INCR_WITH_TTL)
        self._apply = self._client.register_script(scripts.APPLY_WRITES)
        self._lookup = self._client.register_script(scripts.LOOKUP_OR_FILL)
        self._breaker_seconds = breaker_seconds
        self._open_until = 0.0

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        if time.monotonic() < self._open_until:
            raise KVUnavailable("Redis is unreachable (recent failures); using the store instead")
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self._open_until = time.monotonic() + self._breaker_seconds
            log.warning("Redis unreachable: %s", exc)
            raise KVUnavailable(f"Redis is unreachable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise KVError(f"Redis error: {exc}") from exc

    async def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None when CONFIG is not allowed (managed Redis) or Redis is down."""
        try:
            async with self._guard():
                config: dict[Any, Any] = await self._client.config_get("maxmemory-policy")
        except KVError as exc:
            log.debug("cannot read maxmemory-policy: %s", exc)
            return None
        value = config.get("maxmemory-policy") or config.get(b"maxmemory-policy")
        return value.decode() if isinstance(value, bytes) else value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        async with self._guard():
            values = await self._client.mget(keys)
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        async with self._guard():
            return bool(await self._client.set(key, value, px=max(1, int(ttl * 1000)), nx=True))

    async def lookup_or_fill(
        self, key: str, generation_key: str, fill_prefix: str, token: bytes, ttl: float
    ) -> tuple[bytes | None, bytes, bool]:
        async with self._guard():
            raw, generation, took = await self._lookup(
                keys=[key, generation_key], args=[fill_prefix, token, max(1, int(ttl * 1000))]
            )
        generation = generation.encode() if isinstance(generation, str) else generation
        if raw is not None:
            raw = raw.encode() if isinstance(raw, str) else raw
            raw = raw[len(generation) + 1 :]
        return raw, generation, bool(took)

    async def release_if_owner(self, key: str, token: bytes) -> bool:
        async with self._guard():
            return bool(await self._release(keys=[key], args=[token]))

    async def set_and_release(self, key: str, value: bytes, ttl: float, lock: str, token: bytes) -> None:
        async with self._guard():
            await self._set_release(keys=[key, lock], args=[value, max(1, int(ttl * 1000)), token])

    async def extend_if_owner(self, key: str, token: bytes, ttl: float) -> bool:
        async with self._guard():
            return bool(await self._extend(keys=[key], args=[token, max(1, int(ttl * 1000))]))

    async def incr(self, key: str, ttl: float) -> int:
        async with self._guard():
            return int(await self._incr(keys=[key], args=[max(1, int(ttl * 1000))]))

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> RateDecision:
        async with self._guard():
            allowed, remaining, retry_ms, reset_ms = await self._gcra(
                keys=[key], args=[max(1, round(interval * 1000)), burst, cost]
            )
        return RateDecision(bool(allowed), int(remaining), int(retry_ms) / 1000, int(reset_ms) / 1000)

    async def get(self, key: str) -> bytes | None:
        async with self._guard():
            value = await self._client.get(key)
            return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        async with self._guard():
            await self._client.set(key, value, px=max(1, int(ttl * 1000)))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with self._guard():
            return int(await self._client.delete(*keys))

    async def ttl(self, key: str) -> float | None:
        async with self._guard():
            ms = await self._client.pttl(key)
        if ms == -2:
            return None
        return -1.0 if ms == -1 else ms / 1000.0

    async def publish(self, channel: str, message: bytes) -> None:
        async with self._guard():
            await self._client.publish(channel, message)

    async def apply(self, writes: Writes) -> None:
        if not writes:
            return
        keys: list[str] = []
        args: list[Any] = [len(writes.sets), len(writes.incrs), len(writes.publishes)]
        for key, value, ttl in writes.sets:
            keys.append(key)
            args += (value, max(1, int(ttl * 1000)))
        for key, ttl in writes.incrs:
            keys.append(key)
            args.append(max(1, int(ttl * 1000)))
        for channel, message in writes.publishes:
            args += (channel, message)
        async with self._guard():
            await self._apply(keys=keys, args=args)

    async def subscribe(
        self, *channels: str, watch: SubscriptionWatch | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        async with self._guard():
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=watch is None)
            await pubsub.subscribe(*channels)
        # With a watch, a ping goes down the subscription's own connection every HEARTBEAT. Redis answers in order,
        # so its answer comes after everything published before it was sent: only that proves nothing was missed
        # (a connection that died without an error looks like a quiet channel). Unanswered within the socket
        # timeout, the subscription fails. redis-py may mend a broken connection by itself and subscribe again,
        # losing what was published meanwhile: the new confirmations tell the watch (each one counts, so with
        # several channels the last one does), and a ping sent before it is never answered.
        pings, token, sent_at, next_ping = 0, b"", None, 0.0
        try:
            while True:
                wait = 1.0
                if watch is not None:
                    now = time.monotonic()
                    if sent_at is None and now >= next_ping:
                        pings += 1
                        token = b"jobyard-%d" % pings
                        async with self._guard():
                            await pubsub.ping(token)
                        sent_at, next_ping = now, now + HEARTBEAT
                    elif sent_at is not None and now - sent_at > self._socket_timeout:
                        raise KVUnavailable(f"the Redis subscription did not answer a ping in {self._socket_timeout} s")
                    wait = HEARTBEAT if sent_at is not None else max(0.0, next_ping - now)
                async with self._guard():
                    message = await pubsub.get_message(timeout=wait)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message":
                    channel = message["channel"]
                    yield (channel.decode() if isinstance(channel, bytes) else channel, message["data"])
                elif watch is None:
                    continue
                elif kind == "subscribe":
                    sent_at, next_ping = None, 0.0
                    watch.subscribed()
                elif kind == "pong" and sent_at is not None and message["data"] == token:
                    watch.heard(sent_at)
                    sent_at = None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def ping(self) -> None:
        async with self._guard():
            await self._client.ping()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose(close_connection_pool=True)
        with contextlib.suppress(Exception):
            await self._subscriber.aclose(close_connection_pool=True)
