"""Cache-aside and locks over the KV, run on memory and on Redis (locks also need the store)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from jobyard.errors import KVUnavailable
from jobyard.kv import cache as cache_module
from jobyard.kv import keys
from jobyard.kv.base import HEARTBEAT, KV, SubscriptionWatch
from jobyard.kv.cache import Cache, UserCache
from jobyard.kv.memory import MemoryKV
from jobyard.kv.redis import RedisKV
from jobyard.locks import Lock, LockLost, LockTimeout
from jobyard.store import Repository
from tests import services


async def _until(condition: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - any condition, polled
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def listening(*caches: Cache) -> AsyncIterator[None]:
    """The caches hear the announced writes (as the API's do), from when they serve local copies."""
    tasks = [asyncio.create_task(cache.listen()) for cache in caches]
    try:
        await _until(lambda: all(cache.serves_local_copies for cache in caches), 5)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_missing_key_is_computed_once_across_processes(kv: KV) -> None:
    calls = 0

    async def slow_compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return b"value"

    api_1, api_2 = Cache(kv, "t"), Cache(kv, "t")  # two API processes sharing one Redis
    got = await asyncio.gather(*(c.get_or_set("job1", "k", slow_compute, 30) for c in [api_1, api_2] * 10))
    assert got == [b"value"] * 20 and calls == 1


async def test_a_write_invalidates_every_copy_and_a_stale_fill_is_not_served(kv: KV) -> None:
    source = {"v": b"old"}
    api_1, api_2 = Cache(kv, "t", local_ttl=60), Cache(kv, "t", local_ttl=60)  # api_2 listens, api_1 does not

    async def read() -> bytes:
        return source["v"]

    async def slow_stale_read() -> bytes:  # read the source, then lose the race to a write
        value = source["v"]
        await asyncio.sleep(0.2)
        return value

    async with listening(api_2):
        assert await api_1.get_or_set("job1", "k", read, 30) == b"old"
        assert await api_2.get_or_set("job1", "k", read, 30) == b"old"
        assert await api_2.get_or_set("job1", "k", read, 30) == b"old"
        assert api_2.stats.local_hits == 1  # api_2 holds its own copy

        api_3 = Cache(kv, "t", local_ttl=0)
        await api_3.invalidate(["job1"])  # a miss on the next read...
        stale_fill = asyncio.create_task(api_3.get_or_set("job1", "k", slow_stale_read, 30))
        await asyncio.sleep(0.05)
        source["v"] = b"new"
        await api_1.invalidate(["job1"])  # ...while a write commits and invalidates
        assert await stale_fill == b"old"  # that caller saw the old value, as it read it before the write
        await asyncio.sleep(0.2)  # the announcements reach api_2's listener, which drops its copy
        assert await api_2.get_or_set("job1", "k", read, 30) == b"new"
        assert await api_1.get_or_set("job1", "k", read, 30) == b"new"
        assert api_2.stats.local_hits == 1


async def test_an_announced_write_drops_the_local_copies_of_its_groups_and_no_others(kv: KV) -> None:
    api = Cache(kv, "t", local_ttl=60)

    async def value() -> bytes:
        return b"v"

    async with listening(api):
        for key, group in (("a1", "a"), ("a2", "a"), ("b", "b")):  # two copies of job a (its status and a page)
            await api.get_or_set(group, key, value, 30)
        api.drop_local(["a", "c"])  # what an announced write of jobs a and c does in every process
        held = api.stats.local_hits
        assert await api.get_or_set("b", "b", value, 30) == b"v"
        assert api.stats.local_hits == held + 1  # b was not written: still served from the local copy
        assert await api.get_or_set("a", "a1", value, 30) == b"v"
        assert await api.get_or_set("a", "a2", value, 30) == b"v"
        assert api.stats.local_hits == held + 1  # both of a's copies were dropped
        assert await api.get_or_set("a", "a1", value, 30) == b"v"
        assert api.stats.local_hits == held + 2  # and a's next read keeps a copy again


async def test_a_primed_copy_is_served_locally_unless_its_group_was_written_since_the_mark(kv: KV) -> None:
    api = Cache(kv, "t", local_ttl=60)

    async def recomputed() -> bytes:
        return b"from the store"

    mark = api.mark()
    assert not api.prime("job1", "status:job1", b"as written", mark)  # not listening yet: nothing tells it to drop
    async with listening(api):
        mark = api.mark()  # taken before the write the primed value comes from
        assert api.prime("job1", "status:job1", b"as written", mark)
        assert await api.get_or_set("job1", "status:job1", recomputed, 30) == b"as written"
        assert api.stats.local_hits == 1 and api.stats.misses == 0  # no round trip at all
        api.drop_local(["job1"])  # a later write of the job, announced: the copy goes as any other
        assert await api.get_or_set("job1", "status:job1", recomputed, 30) == b"from the store"

        mark = api.mark()
        api.drop_local(["job2"])  # written (and announced) between the mark and the prime: stale, not kept
        assert not api.prime("job2", "status:job2", b"as written", mark)
        api.drop_local(["job9"])  # another job written meanwhile does not matter
        assert api.prime("job3", "status:job3", b"as written", mark)
        api.drop_all_local()  # everything dropped since (a reconnect): nothing from before is kept
        assert not api.prime("job4", "status:job4", b"as written", mark)
        assert await api.get_or_set("job2", "status:job2", recomputed, 30) == b"from the store"
        assert await api.get_or_set("job4", "status:job4", recomputed, 30) == b"from the store"
    assert not Cache(kv, "t", local_ttl=0).prime("job5", "status:job5", b"v", 0)  # local copies off


async def test_a_primed_copy_given_as_a_function_is_rendered_on_its_first_read_only(kv: KV) -> None:
    api = Cache(kv, "t", local_ttl=60)
    rendered: list[str] = []

    def render(name: str) -> Callable[[], bytes]:
        def run() -> bytes:
            rendered.append(name)
            if name == "broken":
                raise RuntimeError("a bug in rendering")
            return b"as written: " + name.encode()

        return run

    async def recomputed() -> bytes:
        return b"from the store"

    async with listening(api):
        mark = api.mark()
        assert api.prime("job1", "status:job1", render("job1"), mark, size=100)
        assert api.prime("job2", "status:job2", render("job2"), mark, size=100)
        assert api.prime("job3", "status:job3", render("broken"), mark, size=100)
        assert rendered == [] and api._local_bytes == 300  # nothing rendered yet; the estimates count meanwhile
        for _ in range(2):
            assert await api.get_or_set("job1", "status:job1", recomputed, 30) == b"as written: job1"
        assert rendered == ["job1"] and api.stats.local_hits == 2  # rendered once, on the first read
        assert api._local_bytes == 200 + len(b"as written: job1")  # its real size from then on
        assert await api.get_or_set("job3", "status:job3", recomputed, 30) == b"from the store"
        assert rendered == ["job1", "broken"] and api.stats.local_hits == 2 and api.stats.misses == 1
        # the broken copy is gone, the recomputed value kept in its place
        assert api._local_bytes == 100 + len(b"as written: job1") + len(b"from the store")
        api.drop_local(["job2"])  # dropped before any read: never rendered
        assert await api.get_or_set("job2", "status:job2", recomputed, 30) == b"from the store"
        assert rendered == ["job1", "broken"]


async def test_local_copies_let_go_when_too_many_are_held_are_dropped_cleanly_by_a_later_write() -> None:
    api = Cache(MemoryKV(), "t", local_ttl=60)

    async def value() -> bytes:
        return b"v"

    async with listening(api):
        for i in range(10_050):  # more copies than a process keeps: the oldest half is let go on the way
            await api.get_or_set(f"job{i}", f"job{i}", value, 30)
            if i % 500 == 0:
                await asyncio.sleep(0)  # the listener's turn (it shows the announcements complete)
        api.drop_local(["job1", "job10049"])  # one copy let go already, one held
        held = api.stats.local_hits
        assert await api.get_or_set("job10048", "job10048", value, 30) == b"v"
        assert api.stats.local_hits == held + 1
        assert await api.get_or_set("job10049", "job10049", value, 30) == b"v"
        assert await api.get_or_set("job1", "job1", value, 30) == b"v"
        assert api.stats.local_hits == held + 1  # neither was served locally
        api.drop_all_local()
        assert await api.get_or_set("job10048", "job10048", value, 30) == b"v"
        assert api.stats.local_hits == held + 1


async def test_local_copies_are_bounded_in_bytes_too_and_the_newest_are_kept() -> None:
    api = Cache(MemoryKV(), "t", local_ttl=60)
    big = b"x" * (1024 * 1024)

    async def value() -> bytes:
        return big

    async with listening(api):
        for i in range(40):  # 40 MiB of copies: more than a process keeps
            await api.get_or_set(f"job{i}", f"job{i}", value, 30)
        held = api.stats.local_hits
        assert await api.get_or_set("job39", "job39", value, 30) == big
        assert api.stats.local_hits == held + 1  # the newest copy is held
        assert await api.get_or_set("job0", "job0", value, 30) == big
        assert api.stats.local_hits == held + 1  # the oldest was let go
        assert api._local_bytes == sum(len(entry[1]) for entry in api._local.values()) <= cache_module.MAX_LOCAL_BYTES
        api.drop_local(["job39"])
        assert api._local_bytes == sum(len(entry[1]) for entry in api._local.values())


class _CountingKV:
    """The KV, counting the fill locks taken through it (one per recompute started) and the polls for a value
    that another process recomputes."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self.fill_locks = self.polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)

    async def lookup_or_fill(
        self, key: str, generation_key: str, fill_prefix: str, token: bytes, ttl: float
    ) -> tuple[bytes | None, bytes, bool]:
        found, generation, took = await self._kv.lookup_or_fill(key, generation_key, fill_prefix, token, ttl)
        self.fill_locks += took
        return found, generation, took

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        took = await self._kv.set_nx(key, value, ttl)
        self.fill_locks += took
        return took

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.polls += 1
        return await self._kv.get_many(keys)


class _Recompute:
    """A recompute that takes ``delay`` seconds and counts its calls; with ``error``, it fails with it."""

    def __init__(self, delay: float, error: Exception | None = None) -> None:
        self.delay, self.error, self.calls = delay, error, 0

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return b"value"


class _Source:
    """The data behind a cached value: read at once, or read and then held ``delay`` seconds (a slow query that
    loses the race to a write committed meanwhile)."""

    def __init__(self, delay: float) -> None:
        self.value, self.delay = b"old", delay

    async def read(self) -> bytes:
        return self.value

    async def slow_read(self) -> bytes:
        value = self.value
        await asyncio.sleep(self.delay)
        return value


async def test_readers_in_one_process_wait_for_its_recompute_instead_of_each_polling(kv: KV) -> None:
    counting = _CountingKV(kv)
    api = Cache(counting, "t", local_ttl=0)  # type: ignore[arg-type]
    compute = _Recompute(0.1)
    got = await asyncio.gather(*(api.get_or_set("job1", "k", compute, 30) for _ in range(20)))
    assert got == [b"value"] * 20 and compute.calls == 1
    assert counting.fill_locks == 1  # one reader took the fill lock; the 19 others waited in the process
    assert counting.polls == 0  # rather than polling the shared cache


class _SlowStoreKV:
    """The KV, with storing a recomputed value held until ``release`` is set (a slow round trip under load);
    with ``fail``, storing raises ``KVUnavailable`` instead."""

    def __init__(self, kv: KV, *, fail: bool = False) -> None:
        self._kv, self.fail = kv, fail
        self.release = asyncio.Event()
        self.storing = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)

    async def set_and_release(self, key: str, value: bytes, ttl: float, lock: str, token: bytes) -> None:
        self.storing.set()
        if self.fail:
            raise KVUnavailable("redis went away")
        await self.release.wait()
        await self._kv.set_and_release(key, value, ttl, lock, token)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self.fail:
            raise KVUnavailable("redis went away")
        await self._kv.set(key, value, ttl)


async def test_readers_get_a_recomputed_value_before_it_is_stored(kv: KV) -> None:
    slow = _SlowStoreKV(kv)
    api, compute = Cache(slow, "t", local_ttl=0), _Recompute(0.05)  # type: ignore[arg-type]
    filler = asyncio.create_task(api.get_or_set("job1", "k", compute, 30))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(api.get_or_set("job1", "k", compute, 30)) for _ in range(5)]
    await asyncio.wait_for(slow.storing.wait(), 5)
    # The store is still held: the reader that recomputed and those that waited for it have their value, and a
    # later reader of the process takes it from the recompute too, rather than recomputing or polling Redis.
    assert await asyncio.wait_for(asyncio.gather(filler, *waiters), 5) == [b"value"] * 6
    assert await asyncio.wait_for(api.get_or_set("job1", "k", compute, 30), 5) == b"value"
    assert compute.calls == 1 and await kv.get(keys.cache_value("t", "k")) is None
    assert await kv.get(keys.cache_fill("t", "k", "0")) is not None  # held until the value is stored
    slow.release.set()
    await asyncio.wait_for(api.settle(), 5)
    assert await Cache(kv, "t", local_ttl=0).get_or_set("job1", "k", _Recompute(0, LookupError("no")), 30) == b"value"
    assert await kv.get(keys.cache_fill("t", "k", "0")) is None  # stored and the fill lock released together
    assert not api._fills and not api._storing


async def test_a_recomputed_value_that_cannot_be_stored_is_still_returned_and_not_recomputed(kv: KV) -> None:
    api, compute = Cache(_SlowStoreKV(kv, fail=True), "t", local_ttl=0), _Recompute(0.02)  # type: ignore[arg-type]
    got = await asyncio.gather(*(api.get_or_set("job1", "k", compute, 30) for _ in range(3)))
    assert got == [b"value"] * 3 and compute.calls == 1
    await asyncio.wait_for(api.settle(), 5)
    assert api.stats.unstored == 1
    assert await kv.get(keys.cache_fill("t", "k", "0")) is None  # the fill lock is not left to expire
    assert not api._fills


async def test_a_store_cut_short_still_releases_the_fill_lock(kv: KV) -> None:
    slow = _SlowStoreKV(kv)
    api = Cache(slow, "t", local_ttl=0)  # type: ignore[arg-type]
    assert await asyncio.wait_for(api.get_or_set("job1", "k", _Recompute(0.0), 30), 5) == b"value"
    await asyncio.wait_for(slow.storing.wait(), 5)
    assert await kv.get(keys.cache_fill("t", "k", "0")) is not None
    for task in api._storing:
        task.cancel()  # the process is shutting down while the value is being stored
    await asyncio.wait_for(api.settle(), 5)
    assert await kv.get(keys.cache_fill("t", "k", "0")) is None  # other processes' readers need not wait for it
    assert await kv.get(keys.cache_value("t", "k")) is None
    assert not api._fills and not api._storing


async def test_a_burst_of_recomputes_while_redis_lags_waits_for_its_stores(kv: KV, monkeypatch: Any) -> None:
    # Beyond MAX_STORES_IN_FLIGHT values being stored in the background, a reader stores its own before answering.
    monkeypatch.setattr(cache_module, "MAX_STORES_IN_FLIGHT", 2)
    slow = _SlowStoreKV(kv)
    api = Cache(slow, "t", local_ttl=0)  # type: ignore[arg-type]
    for key in ("a", "b"):
        assert await asyncio.wait_for(api.get_or_set(key, key, _Recompute(0.0), 30), 5) == b"value"
    third = asyncio.create_task(api.get_or_set("c", "c", _Recompute(0.0), 30))
    await asyncio.sleep(0.05)
    assert not third.done() and len(api._storing) == 2  # held back until its own value is stored
    slow.release.set()
    assert await asyncio.wait_for(third, 5) == b"value"
    await asyncio.wait_for(api.settle(), 5)
    assert [await kv.get(keys.cache_value("t", key)) for key in "abc"] == [b"0:value"] * 3


async def test_lookup_or_fill_takes_the_fill_lock_of_the_current_generation_on_a_miss_only(kv: KV) -> None:
    value_key, gen_key = keys.cache_value("t", "k"), keys.cache_generation("t", "g")
    fill = keys.cache_fill_prefix("t", "k")
    assert await kv.lookup_or_fill(value_key, gen_key, fill, b"one", 30) == (None, b"0", True)  # no generation yet: 0
    assert await kv.get(fill + "0") == b"one"
    assert await kv.lookup_or_fill(value_key, gen_key, fill, b"two", 30) == (None, b"0", False)  # held by the first
    await kv.set(value_key, b"0:the:value", 30)
    assert await kv.lookup_or_fill(value_key, gen_key, fill, b"two", 30) == (b"the:value", b"0", False)
    await kv.incr(gen_key, 30)  # a write: the stored value is of an older generation
    assert await kv.lookup_or_fill(value_key, gen_key, fill, b"two", 0.5) == (None, b"1", True)
    assert await kv.get(fill + "1") == b"two" and await kv.get(fill + "0") == b"one"
    remaining = await kv.ttl(fill + "1")
    assert remaining is not None and 0 < remaining <= 0.5
    await kv.set(value_key, b"10:not of generation 1", 30)  # a generation that merely starts with the current one
    assert (await kv.lookup_or_fill(value_key, gen_key, fill, b"three", 30))[0] is None


async def test_a_recompute_that_raises_a_kv_error_is_not_run_a_second_time(kv: KV) -> None:
    api, compute = Cache(kv, "t", local_ttl=0), _Recompute(0.02, KVUnavailable("the compute's own Redis call"))
    results = await asyncio.gather(
        *(api.get_or_set("job1", "k", compute, 30) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, KVUnavailable) for r in results) and compute.calls == 1  # it may have side effects
    assert api.stats.bypassed == 0
    assert await kv.get(keys.cache_fill("t", "k", "0")) is None


async def test_set_and_release_stores_and_releases_only_its_own_lock(kv: KV) -> None:
    assert await kv.set_nx("lock1", b"mine", 30)
    await kv.set_and_release("v1", b"one", 30, "lock1", b"mine")
    assert await kv.get("v1") == b"one" and await kv.get("lock1") is None
    assert await kv.set_nx("lock2", b"theirs", 30)
    await kv.set_and_release("v2", b"two", 0.5, "lock2", b"mine")
    assert await kv.get("v2") == b"two" and await kv.get("lock2") == b"theirs"  # another holder's lock stays
    remaining = await kv.ttl("v2")
    assert remaining is not None and 0 < remaining <= 0.5


async def test_a_reader_after_a_write_does_not_wait_for_a_recompute_of_the_older_generation(kv: KV) -> None:
    source, api = _Source(0.2), Cache(kv, "t", local_ttl=0)
    before_write = asyncio.create_task(api.get_or_set("job1", "k", source.slow_read, 30))
    await asyncio.sleep(0.05)
    source.value = b"new"
    await api.invalidate(["job1"])  # the write commits while that recompute is under way
    assert await api.get_or_set("job1", "k", source.read, 30) == b"new"  # a newer generation: its own recompute
    assert await before_write == b"old"


async def test_when_the_reader_recomputing_is_cancelled_a_waiting_reader_recomputes(kv: KV) -> None:
    api, compute = Cache(kv, "t", local_ttl=0), _Recompute(0.1)
    first = asyncio.create_task(api.get_or_set("job1", "k", compute, 30))
    await asyncio.sleep(0.02)
    waiting = asyncio.create_task(api.get_or_set("job1", "k", compute, 30))
    await asyncio.sleep(0.02)
    first.cancel()  # its client went away
    assert await waiting == b"value"
    assert first.cancelled() and compute.calls == 2


async def test_a_recompute_that_fails_fails_its_waiting_readers_with_the_same_error(kv: KV) -> None:
    api, compute = Cache(kv, "t", local_ttl=0), _Recompute(0.05, LookupError("job1 not found"))
    results = await asyncio.gather(
        *(api.get_or_set("job1", "k", compute, 30) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results) and compute.calls == 1
    assert not api._fills  # nothing left behind
    assert await kv.get(keys.cache_fill("t", "k", "0")) is None  # the fill lock is released, not left to expire


def _two_processes(kv: KV) -> tuple[Cache, Cache]:
    """Two API processes; waiting for the other's recompute could last 30 s, so a wait shows as a timeout."""
    return Cache(kv, "t", local_ttl=0, wait_for_fill=30), Cache(kv, "t", local_ttl=0, wait_for_fill=30)


async def test_a_process_reading_after_a_write_does_not_wait_for_another_s_recompute_of_older_data(kv: KV) -> None:
    source, (api_1, api_2) = _Source(0.3), _two_processes(kv)
    before_write = asyncio.create_task(api_1.get_or_set("job1", "k", source.slow_read, 30))
    await asyncio.sleep(0.05)  # api_1 holds the fill lock of the current generation
    source.value = b"new"
    await api_1.invalidate(["job1"])
    assert await asyncio.wait_for(api_2.get_or_set("job1", "k", source.read, 30), 5) == b"new"
    assert await before_write == b"old"


async def test_when_a_process_s_recompute_fails_another_waiting_for_it_recomputes_at_once(kv: KV) -> None:
    api_1, api_2 = _two_processes(kv)
    failed = asyncio.create_task(api_1.get_or_set("job1", "k", _Recompute(0.1, LookupError("store busy")), 30))
    await asyncio.sleep(0.02)
    # well within the fill lock's TTL (5 s): only its release lets api_2 go on this soon
    assert await asyncio.wait_for(api_2.get_or_set("job1", "k", _Recompute(0.0), 30), 2) == b"value"
    with pytest.raises(LookupError):
        await failed


async def test_a_fill_that_races_a_write_keeps_no_local_copy(kv: KV) -> None:
    source = {"v": b"old"}
    api = Cache(kv, "t", local_ttl=60)  # the process that reads, and (in embedded mode) also writes

    async def slow_stale_read() -> bytes:  # read the source, then lose the race to a write
        value = source["v"]
        await asyncio.sleep(0.1)
        return value

    async def read() -> bytes:
        return source["v"]

    async with listening(api):
        racing = asyncio.create_task(api.get_or_set("job1", "k", slow_stale_read, 30))
        await asyncio.sleep(0.02)
        source["v"] = b"new"
        await api.invalidate(["job1"])  # the write commits while the read is under way
        assert await racing == b"old"
        # The next read must not be served the racing read's value from the local copy for the next minute.
        assert await api.get_or_set("job1", "k", read, 30) == b"new"
        # Another group's drop does not stop a later read of job1 from being kept locally.
        assert await api.get_or_set("job1", "k", read, 30) == b"new"
        await api.invalidate(["job2"])
        source["v"] = b"newer, but job1 was not invalidated"
        assert await api.get_or_set("job1", "k", read, 30) == b"new"


async def _value() -> bytes:
    return b"v"


async def test_a_process_that_does_not_hear_the_announcements_keeps_no_local_copy(kv: KV) -> None:
    api = Cache(kv, "t", local_ttl=60)
    for _ in range(3):
        assert await api.get_or_set("job1", "k", _value, 30) == b"v"
    assert api.stats.local_hits == 0  # every read asked the shared cache, which every write invalidates
    async with listening(api):
        await api.get_or_set("job1", "k", _value, 30)
        await api.get_or_set("job1", "k", _value, 30)
        assert api.stats.local_hits == 1
    # It stopped listening: what it held is dropped, and no read keeps a copy.
    assert not api.listening
    await api.get_or_set("job1", "k", _value, 30)
    await api.get_or_set("job1", "k", _value, 30)
    assert api.stats.local_hits == 1


class _SilentKV(MemoryKV):
    """A KV whose subscription is confirmed and then goes quiet: a connection that broke without an error yet."""

    async def subscribe(
        self, *channels: str, watch: SubscriptionWatch | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        if watch is not None:
            watch.subscribed()
            watch.heard(time.monotonic())
        await asyncio.Event().wait()
        yield ("", b"")  # never reached


async def test_local_copies_are_not_served_once_the_subscription_has_not_been_heard_from_for_a_while() -> None:
    api = Cache(_SilentKV(), "t", local_ttl=60)
    async with listening(api):
        await api.get_or_set("job1", "k", _value, 30)
        await api.get_or_set("job1", "k", _value, 30)
        assert api.stats.local_hits == 1  # just confirmed: served locally
        await asyncio.sleep(cache_module.HEARD_WITHIN + 0.1)
        await api.get_or_set("job1", "k", _value, 30)
        assert api.stats.local_hits == 1 and api.stats.hits == 1  # not heard from since: asked the shared cache


class _Recorder:
    """A subscription watch that notes its calls: (kind, when, since) with ``since`` the time ``heard`` vouches for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def subscribed(self) -> None:
        self.calls.append(("subscribed", time.monotonic(), 0.0))

    def heard(self, since: float) -> None:
        self.calls.append(("heard", time.monotonic(), since))


@contextlib.asynccontextmanager
async def watched(kv: KV, channel: str) -> AsyncIterator[tuple[_Recorder, list[bytes], asyncio.Task[None]]]:
    """A subscription to ``channel`` with a recording watch, once first heard: the watch, the messages, its task."""
    recorder, received = _Recorder(), []

    async def consume() -> None:
        async for _channel, message in kv.subscribe(channel, watch=recorder):
            received.append(message)

    consumer = asyncio.create_task(consume())
    try:
        await _until(lambda: any(kind == "heard" for kind, _, _ in recorder.calls), 5)
        yield recorder, received, consumer
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)


async def test_a_watched_subscription_is_confirmed_then_heard_from_at_least_every_heartbeat(kv: KV) -> None:
    async with watched(kv, "jobyard-test-watch") as (recorder, received, _):
        await kv.publish("jobyard-test-watch", b"m")
        await asyncio.sleep(0.6)
        assert received == [b"m"]
        assert [kind for kind, _, _ in recorder.calls].count("subscribed") == 1 and recorder.calls[0][0] == "subscribed"
        heard = [(at, since) for kind, at, since in recorder.calls if kind == "heard"]
        assert len(heard) >= 3 and max(b[0] - a[0] for a, b in itertools.pairwise(heard)) < 4 * HEARTBEAT
        assert all(since <= at for at, since in heard)


ON_REDIS = pytest.mark.parametrize("kv", [pytest.param("redis", marks=pytest.mark.integration)], indirect=True)


@ON_REDIS
async def test_a_cut_subscription_stops_local_reads_until_it_is_confirmed_again(kv: RedisKV) -> None:
    # A local copy is served without asking Redis: an announcement missed while the subscription was broken (a
    # Redis restart, a network fault) would leave it stale for as long as it lives.
    cache = Cache(kv, "t", local_ttl=60)
    async with listening(cache):
        await cache.get_or_set("job1", "k", _value, 30)
        await cache.get_or_set("job1", "k", _value, 30)
        assert cache.stats.local_hits == 1

        await kv._client.client_kill_filter(_type="pubsub")
        await _until(lambda: not cache.listening, 5)
        await cache.get_or_set("job1", "k", _value, 30)
        assert cache.stats.local_hits == 1  # the copy was dropped

        await _until(lambda: cache.serves_local_copies, 10)
        await cache.get_or_set("job1", "k", _value, 30)
        await cache.get_or_set("job1", "k", _value, 30)
        assert cache.stats.local_hits == 2  # listening again: copies are kept again
        await cache.invalidate(["job1"])
        await cache.get_or_set("job1", "k", _value, 30)
        assert cache.stats.local_hits == 2  # and announced writes still drop them


@ON_REDIS
async def test_a_subscription_that_redis_py_mends_by_itself_is_confirmed_again(kv: RedisKV) -> None:
    # With retries configured, redis-py reconnects a cut subscription and subscribes again without an error:
    # what was published in between is lost, and only the new confirmation tells.
    kv._subscriber.set_retry(Retry(NoBackoff(), 3))
    async with watched(kv, "jobyard-test-mend") as (recorder, received, consumer):
        await kv._client.client_kill_filter(_type="pubsub")  # (only this test's process subscribes meanwhile)
        cut = time.monotonic()
        await _until(lambda: [kind for kind, _, _ in recorder.calls].count("subscribed") == 2, 10)
        assert not consumer.done()  # mended, not failed
        mended = next(at for kind, at, _ in recorder.calls if kind == "subscribed" and at > cut)
        # Nothing vouched for the time after the cut before the new confirmation.
        assert not [since for kind, at, since in recorder.calls if kind == "heard" and at < mended and since > cut]
        await kv.publish("jobyard-test-mend", b"after")
        await _until(lambda: received == [b"after"], 5)
        await _until(lambda: recorder.calls[-1][0] == "heard" and recorder.calls[-1][2] > mended, 5)


class _Proxy:
    """A TCP relay to Redis that can stall: bytes stop flowing both ways, and no connection is closed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.flowing = host, port, asyncio.Event()
        self.flowing.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers += [writer, up_writer]
        self._tasks += [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()


@ON_REDIS
async def test_a_subscription_that_stalls_without_an_error_stops_local_reads_within_a_second(kv: RedisKV) -> None:
    # A connection that died without an error (a partition, a dropped idle connection) looks like a quiet channel:
    # only a ping answered down the subscription's own connection shows that no announcement is missing.
    url = urlsplit(services.REDIS_URL)
    proxy = _Proxy(url.hostname or "127.0.0.1", url.port or 6379)
    proxied = RedisKV(urlunsplit(url._replace(netloc=f"127.0.0.1:{await proxy.start()}")))
    cache, source = Cache(proxied, "t", local_ttl=60), {"v": b"old"}

    async def read() -> bytes:
        return source["v"]

    try:
        async with listening(cache):
            assert await cache.get_or_set("job1", "k", read, 30) == b"old"
            assert await cache.get_or_set("job1", "k", read, 30) == b"old"
            assert cache.stats.local_hits == 1

            proxy.flowing.clear()
            stalled = time.monotonic()
            source["v"] = b"new"
            await Cache(kv, "t", local_ttl=0).invalidate(["job1"])  # a write, announced by another process
            while await cache.get_or_set("job1", "k", read, 30) == b"old":
                assert time.monotonic() - stalled < cache_module.HEARD_WITHIN + 0.5, "a stale copy was served on"
                await asyncio.sleep(0.05)
            await _until(lambda: not cache.listening, 5)  # and the stalled subscription is given up
    finally:
        proxy.flowing.set()
        await proxied.close()
        await proxy.close()


async def test_the_user_cache_stores_json_with_a_ttl(kv: KV) -> None:
    cache = UserCache(kv)
    fetched: list[int] = []

    def fetch_rates() -> dict[str, float]:
        fetched.append(1)
        return {"eur": 1.08}

    assert await cache.get_or_set("rates", fetch_rates, ttl=60) == {"eur": 1.08}
    assert await cache.get_or_set("rates", fetch_rates, ttl=60) == {"eur": 1.08}
    await cache.invalidate("rates")
    assert await cache.get_or_set("rates", fetch_rates, ttl=60) == {"eur": 1.08}
    assert len(fetched) == 2


class DeadKV(MemoryKV):
    """Redis gone: every call fails the way RedisKV fails when it cannot connect."""

    def __getattribute__(self, name: str) -> Any:
        if name in {"get", "get_many", "set", "set_nx", "release_if_owner", "extend_if_owner",
                    "publish", "gcra", "incr", "ping", "delete", "apply"}:  # fmt: skip

            async def down(*args: Any, **kwargs: Any) -> Any:
                raise KVUnavailable("Redis is unreachable")

            return down
        return super().__getattribute__(name)

    async def subscribe(self, *channels: str, watch: SubscriptionWatch | None = None) -> Any:
        raise KVUnavailable("Redis is unreachable")
        yield  # an async generator, like the real one


async def test_the_cache_reads_the_source_while_redis_is_down() -> None:
    cache = Cache(DeadKV(), "t", local_ttl=0)

    async def read() -> bytes:
        return b"from the store"

    assert await cache.get_or_set("g", "k", read, 30) == b"from the store"
    await cache.invalidate(["g"])  # does not raise; kept for when Redis returns
    assert cache.stats.bypassed == 1


@pytest.mark.parametrize("redis_down", [False, True])
async def test_locks_are_exclusive_with_growing_fences(kv: KV, repo: Repository, redis_down: bool) -> None:
    backing: KV = DeadKV() if redis_down else kv
    inside: list[int] = []
    fences: list[int] = []

    async def critical(i: int) -> None:
        async with Lock(backing, repo, "olt:olt-001", ttl=5, wait=10) as lock:
            inside.append(i)
            assert len(inside) == 1, "two holders at once"
            fences.append(lock.fence)
            await asyncio.sleep(0.02)
            inside.remove(i)

    await asyncio.gather(*(critical(i) for i in range(6)))
    assert fences == sorted(fences) and len(set(fences)) == 6


async def test_a_held_lock_times_out_waiters_and_a_lost_lock_is_detected(kv: KV, repo: Repository) -> None:
    async with Lock(kv, repo, "busy", ttl=5, wait=1):
        with pytest.raises(LockTimeout):
            async with Lock(kv, repo, "busy", ttl=5, wait=0.2):
                pass
    with pytest.raises(LockLost):
        async with Lock(kv, repo, "fragile", ttl=0.3, wait=1) as lock:
            await kv.delete("jobyard:lock:fragile")  # expired behind our back
            await asyncio.sleep(0.3)
    assert lock.lost
