"""One KV contract, run on the in-memory KV and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from jobyard.kv.base import KV, Writes


async def test_set_get_delete(kv: KV) -> None:
    assert await kv.get("jobyard:test:a") is None
    await kv.set("jobyard:test:a", b"1", ttl=60)
    assert await kv.get("jobyard:test:a") == b"1"
    assert await kv.delete("jobyard:test:a", "jobyard:test:missing") == 1
    assert await kv.get("jobyard:test:a") is None


async def test_every_value_expires(kv: KV) -> None:
    await kv.apply(Writes(sets=[("jobyard:test:x", b"x", 0.2), ("jobyard:test:y", b"y", 0.2)]))
    left = await kv.ttl("jobyard:test:x")
    assert left is not None and 0 < left <= 0.2
    await asyncio.sleep(0.35)
    assert await kv.get("jobyard:test:x") is None and await kv.get("jobyard:test:y") is None
    assert await kv.ttl("jobyard:test:x") is None


async def _listening(
    kv: KV, channel: str, count: int, on_message: Callable[[], Awaitable[None]] | None = None
) -> tuple[asyncio.Task[None], list[tuple[str, bytes]]]:
    """Subscribe to ``channel`` and collect ``count`` messages in a task (``on_message`` runs after each)."""
    received: list[tuple[str, bytes]] = []
    stream = kv.subscribe(channel)
    ready = asyncio.Event()

    async def listen() -> None:
        ready.set()
        try:
            async for item in stream:
                received.append(item)
                if on_message is not None:
                    await on_message()
                if len(received) == count:
                    return
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    task = asyncio.create_task(listen())
    await ready.wait()
    await asyncio.sleep(0.2)  # let the SUBSCRIBE reach the server
    return task, received


async def test_published_messages_reach_subscribers(kv: KV) -> None:
    task, received = await _listening(kv, "jobyard:test:ch", 2)
    await kv.publish("jobyard:test:ch", b"one")
    await kv.apply(Writes(publishes=[("jobyard:test:ch", b"two"), ("jobyard:test:other", b"nope")]))
    await asyncio.wait_for(task, 5)
    assert received == [("jobyard:test:ch", b"one"), ("jobyard:test:ch", b"two")]


async def test_writes_apply_in_one_round_trip_in_order(kv: KV) -> None:
    seen_then: list[tuple[bytes | None, bytes | None]] = []

    async def read_back() -> None:
        # What a subscriber reads when it hears the publish: the writes before it are already there.
        seen_then.append((await kv.get("jobyard:test:r1"), await kv.get("jobyard:test:gen")))

    task, received = await _listening(kv, "jobyard:test:batch", 1, read_back)
    await kv.apply(Writes())  # nothing to send is fine
    writes = Writes(sets=[("jobyard:test:r1", b"v1", 30.0)], incrs=[("jobyard:test:gen", 30.0)])
    writes.add(Writes(incrs=[("jobyard:test:gen", 30.0)], publishes=[("jobyard:test:batch", b"done")]))
    await kv.apply(writes)
    await asyncio.wait_for(task, 5)
    assert received == [("jobyard:test:batch", b"done")]
    assert seen_then == [(b"v1", b"2")]
    for key in ("jobyard:test:r1", "jobyard:test:gen"):
        left = await kv.ttl(key)
        assert left is not None and 0 < left <= 30


async def test_writes_still_apply_after_redis_forgot_its_scripts(kv: KV) -> None:
    from jobyard.kv.redis import RedisKV

    await kv.apply(Writes(sets=[("jobyard:test:before", b"v", 30.0)]))
    if isinstance(kv, RedisKV):
        await kv._client.script_flush()  # what a restarted or flushed Redis has forgotten
    await kv.apply(Writes(sets=[("jobyard:test:after", b"v", 30.0)], incrs=[("jobyard:test:n", 30.0)]))
    assert await kv.get("jobyard:test:after") == b"v" and await kv.get("jobyard:test:n") == b"1"


async def test_ping(kv: KV) -> None:
    await kv.ping()


async def test_set_nx_and_owner_checked_release_and_extend(kv: KV) -> None:
    assert await kv.set_nx("jobyard:lock:t", b"me", ttl=5)
    assert not await kv.set_nx("jobyard:lock:t", b"you", ttl=5)
    assert not await kv.release_if_owner("jobyard:lock:t", b"you")
    assert not await kv.extend_if_owner("jobyard:lock:t", b"you", ttl=60)
    assert await kv.extend_if_owner("jobyard:lock:t", b"me", ttl=60)
    left = await kv.ttl("jobyard:lock:t")
    assert left is not None and left > 5
    assert await kv.release_if_owner("jobyard:lock:t", b"me")
    assert await kv.get("jobyard:lock:t") is None


async def test_incr_counts_and_keeps_a_ttl(kv: KV) -> None:
    assert [await kv.incr("jobyard:test:n", ttl=30) for _ in range(3)] == [1, 2, 3]
    left = await kv.ttl("jobyard:test:n")
    assert left is not None and 0 < left <= 30
    assert await kv.get_many(["jobyard:test:n", "jobyard:test:none"]) == [b"3", None]


async def test_gcra_admits_the_burst_then_one_per_interval(kv: KV) -> None:
    decisions = [await kv.gcra("jobyard:rate:t", interval=60.0, burst=5) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 59 < decisions[5].retry_after <= 60.0
    left = await kv.ttl("jobyard:rate:t")
    assert left is not None and 0 < left <= 300  # the limit key expires when the bucket is full again


async def test_gcra_admits_a_request_that_takes_the_whole_burst_and_then_none(kv: KV) -> None:
    whole = await kv.gcra("jobyard:rate:w", interval=12.0, burst=5, cost=5)  # a batch of five against five a minute
    assert whole.allowed and whole.remaining == 0 and 59 < whole.reset_after <= 60.0
    refused = await kv.gcra("jobyard:rate:w", interval=12.0, burst=5)
    assert not refused.allowed and 11 < refused.retry_after <= 12.0
    assert not (await kv.gcra("jobyard:rate:x", interval=12.0, burst=5, cost=6)).allowed  # more than the burst


async def test_gcra_refills_at_its_rate(kv: KV) -> None:
    assert (await kv.gcra("jobyard:rate:r", interval=0.2, burst=1)).allowed
    assert not (await kv.gcra("jobyard:rate:r", interval=0.2, burst=1)).allowed
    await asyncio.sleep(0.25)
    assert (await kv.gcra("jobyard:rate:r", interval=0.2, burst=1)).allowed
