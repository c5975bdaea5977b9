"""The event hub: one pub/sub subscription per API process, fanned out to every stream client in memory.

Each client gets a bounded queue; a client that falls behind is marked ``lost`` and resyncs from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from jobyard import jsonutil
from jobyard.errors import JobyardError
from jobyard.kv import keys
from jobyard.kv.base import KV
from jobyard.store.repository import Repository
from jobyard.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger("jobyard.live.hub")

PROBE_INTERVAL = 5.0  # seconds between the hub's own probes through Redis (a silent subscription is noticed)
RETRY_DELAY = 1.0
TENANT_CACHE_SIZE = 10_000


class LiveEvent:
    """One status event as received, encoded (lazily, once) for every SSE and WebSocket client."""

    __slots__ = ("_body", "_sse", "_ws", "data", "id", "job_id", "type")

    def __init__(self, data: dict[str, Any], body: bytes | None = None) -> None:
        self.data = data
        self._body = body
        self.type = str(data.get("type", "event"))
        self.job_id = str(data.get("job_id", ""))
        self.id = str(int(float(data.get("ts", time.time())) * 1_000_000))
        self._sse: bytes | None = None
        self._ws: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = jsonutil.dumps(self.data)
        return self._body

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"id: %s\nevent: %s\ndata: %s\n\n" % (self.id.encode(), self.type.encode(), self.body)
        return self._sse

    @property
    def ws(self) -> bytes:
        if self._ws is None:
            self._ws = b'{"id":"%s","event":"%s","data":%s}' % (self.id.encode(), self.type.encode(), self.body)
        return self._ws


class Subscription:
    """One stream client's bounded mailbox. Overflow drops events and sets ``lost`` (the client resyncs)."""

    __slots__ = ("key", "lost", "maxsize", "queue")

    def __init__(self, key: tuple[str, str], maxsize: int) -> None:
        self.key = key
        self.maxsize = maxsize
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue()
        self.lost = False

    def offer(self, event: LiveEvent) -> None:
        if self.queue.qsize() >= self.maxsize:
            self.lost = True
            return
        self.queue.put_nowait(event)


class EventHub:
    """Subscribes once to every status event and worker heartbeat; dispatches to job and tenant subscribers.

    ``healthy`` is true while our own probe comes back through the KV; streams poll the store otherwise.
    ``generation`` grows each time the subscription is (re)established, so streams know to resync.
    """

    def __init__(self, kv: KV, repo: Repository, *, buffer: int = 256, probe_interval: float = PROBE_INTERVAL) -> None:
        self.kv = kv
        self.repo = repo
        self.buffer = buffer
        self.probe_interval = probe_interval
        self.healthy = False
        self.generation = 0
        self._id = uuid.uuid4().hex
        self._subs: dict[tuple[str, str], set[Subscription]] = {}
        self._tenants: OrderedDict[str, str] = OrderedDict()
        self._unresolved: asyncio.Queue[LiveEvent] = asyncio.Queue()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._worker_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_probe = 0.0
        self._healthy_changed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        for loop in (self._subscribe_loop, self._probe_loop, self._resolve_loop):
            self._tasks.append(asyncio.create_task(loop(), name=f"jobyard-hub-{loop.__name__}"))

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks.clear()
        self.healthy = False

    async def wait_healthy(self, timeout: float) -> bool:
        """Wait until the subscription is live (tests and start-up); False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.healthy:
                    self._healthy_changed.clear()
                    await self._healthy_changed.wait()
        return self.healthy

    # --- subscribers --------------------------------------------------------------------------------
    def watch_job(self, job_id: UUID | str) -> Subscription:
        return self._add(("job", str(job_id)))

    def watch_tenant(self, tenant_id: str) -> Subscription:
        return self._add(("tenant", tenant_id))

    def _add(self, key: tuple[str, str]) -> Subscription:
        sub = Subscription(key, self.buffer)
        self._subs.setdefault(key, set()).add(sub)
        return sub

    def release(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    @property
    def client_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every status event, as received (the queue sampler counts completions with it)."""
        self._listeners.append(listener)

    def on_worker_heartbeat(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._worker_listeners.append(listener)

    # --- receiving ----------------------------------------------------------------------------------
    async def _subscribe_loop(self) -> None:
        events, workers = keys.all_events_channel(), keys.workers_channel()
        while True:
            try:
                async for channel, raw in self.kv.subscribe(events, workers):
                    if channel == workers:
                        self._worker_heartbeat(raw)
                    else:
                        self._received(raw)
            except JobyardError as exc:
                log.info("event subscription lost (%s); streams read the store until it is back", exc)
            except Exception:
                log.exception("event subscription failed; retrying")
            raise_if_cancelling()
            self._set_healthy(False)
            await asyncio.sleep(RETRY_DELAY)

    async def _probe_loop(self) -> None:
        """Publish a probe to ourselves; if none came back for two intervals, the subscription is not working."""
        while True:
            with contextlib.suppress(JobyardError):
                probe = {"type": "hub.probe", "hub": self._id, "job_id": ""}
                await self.kv.publish(keys.all_events_channel(), jsonutil.dumps(probe))
            raise_if_cancelling()
            await asyncio.sleep(self.probe_interval if self.healthy else min(self.probe_interval, 0.2))
            if self.healthy and time.monotonic() - self._last_probe > 2.5 * self.probe_interval:
                log.warning("no probe came back through the KV; streams read the store until it does")
                self._set_healthy(False)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy and not self.healthy:
            self.generation += 1
        self.healthy = healthy
        self._healthy_changed.set()

    def _received(self, raw: bytes) -> None:
        """One message of the all-events channel: a batch (a JSON array) of events, or our own probe."""
        try:
            data = jsonutil.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            if data.get("type") == "hub.probe":
                if data.get("hub") == self._id:
                    self._last_probe = time.monotonic()
                    self._set_healthy(True)
                return
            data = [data]
        if not isinstance(data, list):
            return
        # Every API process receives every event, mostly with nobody streaming them: an event becomes a LiveEvent
        # (its fields and encodings) only for a stream that takes it.
        subs, listeners = self._subs, self._listeners
        tenants_watched = any(kind == "tenant" for kind, _ in subs)
        for item in data:
            if not isinstance(item, dict):
                continue
            for listener in listeners:
                listener(item)
            if tenants_watched or (subs and ("job", str(item.get("job_id", ""))) in subs):
                self._dispatch(LiveEvent(item), tenants_watched)

    def _dispatch(self, event: LiveEvent, tenants_watched: bool) -> None:
        for sub in self._subs.get(("job", event.job_id), ()):
            sub.offer(event)
        if not tenants_watched:
            return
        tenant = event.data.get("tenant_id") or self._tenants.get(event.job_id)
        if tenant is not None:
            self._to_tenant(str(tenant), event)
        else:
            self._unresolved.put_nowait(event)

    def _to_tenant(self, tenant: str, event: LiveEvent) -> None:
        for sub in self._subs.get(("tenant", tenant), ()):
            sub.offer(event)

    async def _resolve_loop(self) -> None:
        """Events without a tenant: look their jobs' tenants up in the store, many at once, off the hot path."""
        while True:
            batch = [await self._unresolved.get()]
            while not self._unresolved.empty() and len(batch) < 500:
                batch.append(self._unresolved.get_nowait())
            try:
                found = await self.repo.job_tenants([UUID(e.job_id) for e in batch if _is_uuid(e.job_id)])
            except JobyardError as exc:
                raise_if_cancelling()
                log.debug("tenant lookup failed (%s); those events reach only their job's streams", exc)
                continue
            for job_id, tenant in found.items():
                self._tenants[str(job_id)] = tenant
            while len(self._tenants) > TENANT_CACHE_SIZE:
                self._tenants.popitem(last=False)
            for event in batch:
                owner = self._tenants.get(event.job_id)
                if owner is not None:
                    self._to_tenant(owner, event)

    def _worker_heartbeat(self, raw: bytes) -> None:
        try:
            data = jsonutil.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            for listener in self._worker_listeners:
                listener(data)


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
        return True
    except ValueError:
        return False
