"""Cache-aside with generations: correct under concurrent writes, one recompute per key, Redis optional.

A value is stored as ``{generation}:{bytes}`` where the generation is the one read *before* computing it.
Every write bumps its group's generation (e.g. one job), so a value computed from data older than the last
write never counts as a hit, even if it was stored after the invalidation. Within a process, the readers of a key
whose recompute for the same generation is under way wait for its outcome (across processes, a fill lock and a
short poll). A miss costs one round trip before the recompute (the lookup and the fill lock together, in a script)
and none after it: the value is answered at once and stored in the background, the fill lock released with it;
until then the process's readers of that generation take it from the recompute. If Redis is down, reads go to the
source.

A process that listens for the announcements (``listen``) also keeps local copies, each dropped when a write of its
group is announced on pub/sub, and kept for at most the TTL from when it was read. A local copy is served without
asking Redis, so it is only kept and served while the process cannot have missed an announcement: from the
subscription's confirmation on (everything read before it is dropped, again after any reconnect), and only while
the subscription has shown, within the last ``HEARD_WITHIN`` seconds, that every announcement published until then
has been handled (on Redis, a ping down the subscription's connection answered after them). A subscription that
died without an error, or a listener that fell behind, stops local reads within that time. A read that was under
way when its group was dropped keeps no local copy (it may hold data from before the write).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobyard import jsonutil
from jobyard.errors import KVError
from jobyard.kv import keys
from jobyard.kv.base import KV, Writes

log = logging.getLogger("jobyard.cache")

GENERATION_TTL = 7 * 86400.0  # outlives any cached value, so a generation never silently resets under one
FILL_LOCK_TTL = 5.0
HEARD_WITHIN = 1.0  # seconds: local copies are served only while the announcements were shown complete this recently
MAX_LOCAL_COPIES = 10_000
MAX_LOCAL_BYTES = 32 * 1024 * 1024
MAX_STORES_IN_FLIGHT = 1_000  # recomputed values stored in the background; beyond, a reader waits for its own


@dataclass
class CacheStats:
    local_hits: int = 0
    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # Redis unavailable: served from the source
    unstored: int = 0  # recomputed (counted as misses) but Redis refused to store them: served, not shared

    @property
    def hit_ratio(self) -> float:
        total = self.local_hits + self.hits + self.misses + self.bypassed
        return (self.local_hits + self.hits) / total if total else 0.0


class Cache:
    """``await cache.get_or_set(group, key, compute, ttl)`` where ``compute`` returns bytes."""

    def __init__(self, kv: KV, namespace: str, *, local_ttl: float = 1.0, wait_for_fill: float = 1.0) -> None:
        self.kv = kv
        self.namespace = namespace
        self.local_ttl = local_ttl
        self.wait_for_fill = wait_for_fill
        self.stats = CacheStats()
        # key → (group, value, expires, size), oldest first; a primed value may be kept as the function that renders
        # it (``prime``), rendered on its first read, with an estimate of its size until then
        self._local: dict[str, tuple[str, bytes | Callable[[], bytes], float, int]] = {}
        self._local_bytes = 0
        self._listening = False  # the announcements' subscription is confirmed (see the module's docstring)
        self._heard_at = -HEARD_WITHIN  # every announcement published before this time has been handled
        # group → its keys in ``_local``: an announced write drops its groups' copies without walking every copy
        # (with 10,000 copies held, that walk took about 2 ms per announcement, and workers announce many a second)
        self._by_group: dict[str, set[str]] = {}
        # Local drops are numbered: a read remembers the number it started at, and keeps no local copy if its group
        # (or everything) was dropped since; otherwise a read racing a write could keep the old value for local_ttl.
        self._drops = 0
        self._dropped: dict[str, int] = {}  # group → number of its latest drop (bounded, see _mark_dropped)
        self._all_dropped = 0
        self._pending: set[str] = set()  # generation bumps that could not reach Redis yet
        # (key, generation) → this process's recompute in flight: its other readers of that generation wait for it
        # instead of each taking a turn at the fill lock and polling Redis until the value appears
        self._fills: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._storing: set[asyncio.Task[None]] = set()  # recomputed values being stored in the background
        # Fill-lock tokens, unique across processes: every read through Redis needs one (the lookup takes the lock on
        # a miss), so a counter rather than a uuid4 per read (2 µs and a getrandom call each)
        self._token_prefix = uuid.uuid4().hex.encode()
        self._tokens = itertools.count()

    async def get_or_set(self, group: str, key: str, compute: Callable[[], Awaitable[bytes]], ttl: float) -> bytes:
        local = self._local.get(key)
        if local is not None:
            now = time.monotonic()
            if local[2] > now and now - self._heard_at < HEARD_WITHIN:
                held = local[1]
                value = held if isinstance(held, bytes) else self._render(key, local)
                if value is not None:
                    self.stats.local_hits += 1
                    return value
        started = self._drops
        value_key, gen_key = keys.cache_value(self.namespace, key), keys.cache_generation(self.namespace, group)
        token = b"%s-%d" % (self._token_prefix, next(self._tokens))  # a fill lock's owner, if this read takes it
        try:
            # The lookup and, on a miss, the fill lock: one round trip (two, before; each waits for the event loop
            # to come round, a few ms while a batch runs, and most reads of a job that is running are misses).
            found, gen, took = await self.kv.lookup_or_fill(
                value_key, gen_key, keys.cache_fill_prefix(self.namespace, key), token, FILL_LOCK_TTL
            )
        except KVError:
            self.stats.bypassed += 1
            return await compute()
        if found is not None:
            self.stats.hits += 1
            self._remember(group, key, found, started)
            return found
        generation = gen.decode()
        self.stats.misses += 1
        filling: bool | None = took
        flight = self._fills.get((key, generation))
        if flight is not None:
            if took:  # the process's reader of this generation polls for another process's recompute, just over:
                # give the lock back, for that reader to take over
                with contextlib.suppress(KVError):
                    await self.kv.release_if_owner(keys.cache_fill(self.namespace, key, generation), token)
            await asyncio.wait([flight])  # its outcome, not its cancellation: a cancelled fill is done here instead
            if not flight.cancelled():
                value = flight.result()  # the value, or the error, of the same generation's recompute
                self._remember(group, key, value, started)  # as good as a hit (it may not be stored yet)
                return value
            filling = None  # that reader went away: this one recomputes, and asks for the lock again
        # This reader recomputes; the process's other readers of the key and generation wait for its outcome.
        flight = self._fills[(key, generation)] = asyncio.get_running_loop().create_future()
        storing = False  # the value is being stored in the background: the flight stays until it is stored
        try:
            value, storing = await self._fill(
                group, key, value_key, gen_key, generation, compute, ttl, started, flight, token, filling
            )
        except Exception as exc:
            if not flight.done():  # (done: the value was handed to the waiters before it was stored)
                flight.set_exception(exc)
                flight.exception()  # retrieved: no "never retrieved" warning when nobody was waiting
            raise
        except BaseException:
            if not flight.done():
                flight.cancel()  # this reader was cancelled (it went away): a waiting one recomputes for itself
            raise
        else:
            if not flight.done():
                flight.set_result(value)
            return value
        finally:
            if not storing:
                self._fill_over((key, generation), flight)

    def mark(self) -> int:
        """Where the local drops stand now: pass it to ``prime`` for a value that reflects the store from here on."""
        return self._drops

    def prime(
        self, group: str, key: str, value: bytes | Callable[[], bytes], mark: int, *, size: int | None = None
    ) -> bool:
        """Keep ``value`` as this process's own copy of ``key``, as a read would, without any round trip.

        For a value this process knows without reading it: one it has just written (a new job's first status).
        ``mark`` is ``mark()`` taken before that write: if ``group`` was dropped since (a later write announced),
        nothing is kept, as for a read under way. Returns whether it was kept.

        ``value`` may be a function that renders it, with ``size`` its estimated length: it is called on the
        copy's first read, if any (most new jobs are not read within the copy's TTL, and the API renders nothing
        for them). If it raises, the copy is dropped and that read goes on as if there were none.
        """
        return self._remember(group, key, value, mark, size)

    @property
    def keeps_local_copies(self) -> bool:
        """Whether ``prime`` could keep anything now (local copies on, and the announcements heard)."""
        return self.local_ttl > 0 and self._listening

    def _fill_over(self, fill: tuple[str, str], flight: asyncio.Future[bytes]) -> None:
        if self._fills.get(fill) is flight:
            del self._fills[fill]

    async def _fill(
        self,
        group: str,
        key: str,
        value_key: str,
        gen_key: str,
        generation: str,
        compute: Callable[[], Awaitable[bytes]],
        ttl: float,
        started: int,
        flight: asyncio.Future[bytes],
        token: bytes,
        filling: bool | None,
    ) -> tuple[bytes, bool]:
        """Recompute (``filling``: this reader holds the fill lock; None: it has not asked for it yet), or wait
        briefly for another process's recompute of the same generation. Returns the value, and whether it is
        being stored in the background (``flight`` is then let go of once it is stored)."""
        fill_key = keys.cache_fill(self.namespace, key, generation)

        async def release() -> None:  # once this recompute is over, other processes' readers need not wait for it
            if filling:
                with contextlib.suppress(KVError):
                    await self.kv.release_if_owner(fill_key, token)

        try:
            if filling is None:
                filling = await self.kv.set_nx(fill_key, token, FILL_LOCK_TTL)
            if not filling:  # another process recomputes: wait briefly for its value
                deadline = time.monotonic() + self.wait_for_fill
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.002)  # a recompute is one store read: a few milliseconds
                    raw, gen, holder = await self.kv.get_many([value_key, gen_key, fill_key])
                    current = gen or b"0"
                    if raw is not None and raw.partition(b":")[0] == current:
                        value = raw.partition(b":")[2]
                        self._remember(group, key, value, started)  # as good as a hit
                        return value, False
                    if current.decode() != generation:
                        break  # written meanwhile: the recompute waited for reads older data than ours will
                    if holder is None:  # that recompute gave up (it failed, or its process went away): take over
                        filling = await self.kv.set_nx(fill_key, token, FILL_LOCK_TTL)
                        if filling:
                            break
        except KVError:
            self.stats.bypassed += 1
            return await compute(), False
        try:
            value = await compute()
        except BaseException:
            await release()  # also when the recompute failed: its waiters take over instead of polling on
            raise
        # Neither this reader nor the process's others wait for the value to be stored: under load every round
        # trip waits for the event loop to come round (a few ms each while a batch runs). The value is stored in
        # the background, tagged with the generation read before computing it, so storing late is still correct;
        # until it is stored, the process's readers of the same generation take it from the flight.
        flight.set_result(value)
        self._remember(group, key, value, started)
        stored = generation.encode() + b":" + value
        lock = fill_key if filling else None
        if len(self._storing) >= MAX_STORES_IN_FLIGHT:  # Redis this far behind: back pressure on the readers
            await self._store(key, value_key, stored, ttl, lock, token)
            return value, False
        task = asyncio.create_task(self._store(key, value_key, stored, ttl, lock, token))
        self._storing.add(task)
        task.add_done_callback(functools.partial(self._stored, (key, generation), flight))
        return value, True

    async def _store(self, key: str, value_key: str, stored: bytes, ttl: float, lock: str | None, token: bytes) -> None:
        """Store a recomputed value and release its fill lock (if this process holds it) in one round trip."""
        try:
            if lock is not None:
                await self.kv.set_and_release(value_key, stored, ttl, lock, token)
            else:
                await self.kv.set(value_key, stored, ttl)
        except KVError as exc:  # the value was served; the next reader of another process recomputes it
            self.stats.unstored += 1
            log.debug("a recomputed value of %s could not be stored (%s)", key, exc)
            if lock is not None:
                with contextlib.suppress(KVError):
                    await self.kv.release_if_owner(lock, token)
        except BaseException:  # cancelled while storing (shutting down): still let other processes take over
            if lock is not None:
                with contextlib.suppress(KVError):
                    await self.kv.release_if_owner(lock, token)
            raise

    def _stored(self, fill: tuple[str, str], flight: asyncio.Future[bytes], task: asyncio.Task[None]) -> None:
        self._storing.discard(task)
        self._fill_over(fill, flight)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("storing a recomputed cache value failed", exc_info=exc)

    async def settle(self) -> None:
        """Wait until the recomputed values being stored in the background are stored (or have failed to be)."""
        while self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    def _remember(
        self, group: str, key: str, value: bytes | Callable[[], bytes], started: int, size: int | None = None
    ) -> bool:
        """Keep a local copy of ``key`` (read, or known, as of drop number ``started``); whether it was kept."""
        if self.local_ttl <= 0 or not self._listening:
            return False  # no local copies, or nothing tells this process when to drop them
        if self._all_dropped > started or self._dropped.get(group, 0) > started:
            return False  # the group was dropped while this value was being read
        self._forget(key)  # a key's new copy goes to the end: the oldest are let go first
        size = len(value) if isinstance(value, bytes) else (size or 0)
        self._local[key] = (group, value, time.monotonic() + self.local_ttl, size)
        self._local_bytes += size
        self._by_group.setdefault(group, set()).add(key)
        if len(self._local) > MAX_LOCAL_COPIES or self._local_bytes > MAX_LOCAL_BYTES:
            # bounded: let go of the oldest copies, down to half of both bounds
            while self._local and (
                len(self._local) > MAX_LOCAL_COPIES // 2 or self._local_bytes > MAX_LOCAL_BYTES // 2
            ):
                self._forget(next(iter(self._local)))
        return key in self._local  # (a value larger than half the bytes bound is let go at once)

    def _forget(self, key: str) -> None:
        entry = self._local.pop(key, None)
        if entry is not None:
            self._local_bytes -= entry[3]
            self._unindex(entry[0], key)

    def _render(self, key: str, entry: tuple[str, bytes | Callable[[], bytes], float, int]) -> bytes | None:
        """A primed copy's first read: render it and keep the bytes in its place (same place, same expiry)."""
        render = entry[1]
        assert not isinstance(render, bytes)
        try:
            value = render()
        except Exception:
            log.exception("rendering a primed copy of %s failed; reading it as if there were no copy", key)
            self._forget(key)
            return None
        self._local[key] = (entry[0], value, entry[2], len(value))
        self._local_bytes += len(value) - entry[3]
        return value

    def _unindex(self, group: str, key: str) -> None:
        group_keys = self._by_group.get(group)
        if group_keys is not None:
            group_keys.discard(key)
            if not group_keys:
                del self._by_group[group]

    async def invalidate(self, groups: Sequence[str]) -> None:
        """After a write commits: bump each group's generation and tell every process to drop local copies."""
        if not groups and not self._pending:
            return
        todo, writes = self.invalidation(groups)
        try:
            await self.kv.apply(writes)
        except KVError as exc:
            self.invalidation_failed(todo, exc)
            return
        self.invalidation_sent(todo)

    def invalidation(self, groups: Sequence[str]) -> tuple[list[str], Writes]:
        """The writes that invalidate ``groups`` (and any bumps still pending), for the caller's own round trip.

        Local copies are dropped now. Report the outcome with ``invalidation_sent`` or ``invalidation_failed``.
        """
        self.drop_local(groups)
        todo = sorted(self._pending.union(groups))
        writes = Writes()
        if todo:
            writes.incrs = [(keys.cache_generation(self.namespace, g), GENERATION_TTL) for g in todo]
            message = jsonutil.dumps({"namespace": self.namespace, "groups": todo})
            writes.publishes = [(keys.cache_invalidation_channel(), message)]
        return todo, writes

    def invalidation_sent(self, todo: Sequence[str]) -> None:
        self._pending.difference_update(todo)

    def invalidation_failed(self, todo: Sequence[str], exc: Exception) -> None:
        # Unreachable Redis serves nobody a stale value now, but it may come back with its data (a partition):
        # keep the bumps and send them with the next invalidation that gets through.
        self._pending.update(todo)
        log.debug("cache invalidation deferred (%s): %d groups pending", exc, len(self._pending))

    def drop_all_local(self) -> None:
        self._drops += 1
        self._all_dropped = self._drops
        self._dropped.clear()
        self._local.clear()
        self._local_bytes = 0
        self._by_group.clear()

    def drop_local(self, groups: Sequence[str]) -> None:
        self._drops += 1
        if len(self._dropped) > 10_000:  # bounded: forgetting the groups means no read under way keeps a copy
            self._dropped.clear()
            self._all_dropped = self._drops
        for group in groups:
            self._dropped[group] = self._drops
            for key in self._by_group.pop(group, ()):
                self._forget(key)

    @property
    def listening(self) -> bool:
        """Whether this process hears every announced write now (it keeps local copies only then)."""
        return self._listening

    @property
    def serves_local_copies(self) -> bool:
        """Whether a local copy would be served now: listening, and the announcements shown complete lately."""
        return self._listening and time.monotonic() - self._heard_at < HEARD_WITHIN

    def subscribed(self) -> None:
        """The announcements' subscription is confirmed: copies from before may have missed some, the next may not.

        Copies are served again once ``heard`` shows the announcements complete (on Redis, a moment later)."""
        self.drop_all_local()
        self._listening = True

    def heard(self, since: float) -> None:
        """Every announcement published before ``since`` (``time.monotonic()``) has been handled."""
        self._heard_at = max(self._heard_at, since)

    def not_listening(self) -> None:
        """Announcements may be missed from now on: no local copies until the subscription is confirmed again."""
        self._listening = False
        self.drop_all_local()

    async def listen(self) -> None:
        """Drop local copies when any process announces a write (run as a background task).

        Local copies are kept only while this runs (see the module's docstring)."""
        await listen_for_invalidations(self.kv, [self])


class _Listening:
    """One subscription's fortunes, told to every cache it serves."""

    def __init__(self, caches: Sequence[Cache]) -> None:
        self.caches = caches

    def subscribed(self) -> None:
        for cache in self.caches:
            cache.subscribed()

    def heard(self, since: float) -> None:
        for cache in self.caches:
            cache.heard(since)

    def lost(self) -> None:
        for cache in self.caches:
            cache.not_listening()


async def listen_for_invalidations(kv: KV, caches: Sequence[Cache]) -> None:
    """One subscription for several caches: each drops the local copies of the groups announced in its namespace."""
    by_namespace = {cache.namespace: cache for cache in caches}
    watch = _Listening(caches)
    try:
        while True:
            try:
                async for _channel, raw in kv.subscribe(keys.cache_invalidation_channel(), watch=watch):
                    try:
                        message = jsonutil.loads(raw)
                        cache = by_namespace.get(message.get("namespace"))
                        groups = list(message.get("groups", []))
                    except (ValueError, AttributeError, TypeError):
                        log.warning("ignored a malformed cache announcement: %.200r", raw)
                        continue
                    if cache is not None:
                        cache.drop_local(groups)
            except KVError:
                watch.lost()  # announcements may be missed while Redis is away
                await asyncio.sleep(1.0)
    finally:
        watch.lost()


class UserCache:
    """The cache for users' own values, in actions (``ctx.cache``) and their code (``yard.cache``).

    ``await cache.get_or_set("rates:eur", fetch_rates, ttl=300)``; values are JSON; ``fn`` may be sync or async.
    """

    def __init__(self, kv: KV) -> None:
        self._cache = Cache(kv, "user", local_ttl=0)

    @property
    def stats(self) -> CacheStats:
        return self._cache.stats

    async def get_or_set(self, key: str, fn: Callable[[], Any], ttl: float) -> Any:
        async def compute() -> bytes:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
            return jsonutil.dumps(value)

        return jsonutil.loads(await self._cache.get_or_set(key, key, compute, ttl))

    async def invalidate(self, *keys_: str) -> None:
        await self._cache.invalidate(list(keys_))

    async def settle(self) -> None:
        """Wait for the values being stored in the background (``Cache.settle``)."""
        await self._cache.settle()
