"""What one stream client receives, independent of the wire (SSE or WebSocket): snapshot, live events, final.

Events are state, not deltas: applying one twice is harmless, so resyncs may overlap what was already sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from jobyard import jsonutil
from jobyard.api.views import action_status_view, job_view, status_view
from jobyard.errors import JobyardError, NotFound
from jobyard.live.hub import EventHub, LiveEvent, Subscription
from jobyard.model import ActionRecord, JobRecord
from jobyard.store.repository import Repository

# A resync reads changes from this long before the cursor: event ids are the publisher's clock right after the
# commit, while ``updated_at`` is the database's clock at the statement, a little earlier.
RESYNC_MARGIN = timedelta(seconds=2)
STORE_POLL = 1.0  # seconds between store reads while the event subscription is down
TENANT_POLL = 5.0  # seconds between "reload" hints to tenant-stream clients while it is down


@dataclass(slots=True)
class FeedItem:
    """One message for the client: ``event`` names it; ``body`` is its JSON data; ``id`` resumes after it."""

    event: str
    body: bytes
    id: str | None = None
    live: LiveEvent | None = None  # set for events passed through as received (pre-encoded for every client)

    @classmethod
    def of(cls, event: str, data: Any, id: str | None = None) -> FeedItem:
        return cls(event, jsonutil.dumps(data), id)


HEARTBEAT = FeedItem("heartbeat", b"{}")


def now_id() -> str:
    return str(int(time.time() * 1_000_000))


def parse_event_id(value: str | None) -> datetime | None:
    """A ``Last-Event-ID`` back to the time it stands for (microseconds since the epoch); None if unusable."""
    if not value:
        return None
    try:
        micros = int(value)
    except ValueError:
        return None
    if micros <= 0:
        return None
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def _is_final(job: JobRecord, actions: list[ActionRecord]) -> bool:
    return job.status.is_final and all(a.status.is_final for a in actions)


class JobFeed:
    """One client's view of one job. Subscribe first, then read the store, so nothing falls in between."""

    def __init__(self, repo: Repository, hub: EventHub, tenant: str, job_id: UUID, heartbeat: float) -> None:
        self.repo = repo
        self.hub = hub
        self.tenant = tenant
        self.job_id = job_id
        self.heartbeat = heartbeat
        self._sub: Subscription | None = None

    async def open(self) -> None:
        """Raise ``NotFound`` before any byte is streamed (so the client gets a 404, not an empty stream)."""
        self._sub = self.hub.watch_job(self.job_id)
        try:
            if await self.repo.get_job(self.tenant, self.job_id) is None:
                raise NotFound(f"job {self.job_id} not found")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sub is not None:
            self.hub.release(self._sub)
            self._sub = None

    async def items(self, last_event_id: str | None = None) -> AsyncIterator[FeedItem]:
        assert self._sub is not None, "open() first"
        sub = self._sub
        try:
            since = parse_event_id(last_event_id)
            cursor = last_event_id if since is not None and last_event_id else now_id()
            item, final = await (self._changes(since) if since is not None else self._snapshot())
            yield item
            if final is not None:
                yield final
                return
            generation = self.hub.generation
            loop = asyncio.get_running_loop()
            next_beat = loop.time() + self.heartbeat
            while True:
                resync = sub.lost or generation != self.hub.generation or not self.hub.healthy
                if resync:
                    sub.lost, seen_generation = False, self.hub.generation
                    since = parse_event_id(cursor)
                    assert since is not None
                    read_from = now_id()
                    try:
                        item, final = await self._changes(since)
                    except NotFound:
                        raise
                    except JobyardError:  # the store is busy or down for a moment: read again shortly
                        sub.lost = True
                        await asyncio.sleep(STORE_POLL)
                        if loop.time() >= next_beat:  # and keep the connection alive meanwhile
                            next_beat = loop.time() + self.heartbeat
                            yield HEARTBEAT
                        continue
                    generation, cursor = seen_generation, read_from
                    yield item
                    if final is not None:
                        yield final
                        return
                wait = max(0.0, next_beat - loop.time())
                if not self.hub.healthy:
                    wait = min(wait, STORE_POLL)
                try:
                    event = await asyncio.wait_for(sub.queue.get(), timeout=wait)
                except TimeoutError:
                    if loop.time() >= next_beat:
                        next_beat = loop.time() + self.heartbeat
                        yield HEARTBEAT
                    continue
                cursor = max(cursor, event.id, key=int)
                yield FeedItem(event.type, event.body, event.id, event)
                if event.data.get("job_finished") or event.type == "job.cancelled":
                    try:
                        job, actions = await self._read()
                    except NotFound:
                        raise
                    except JobyardError:  # not known to be final yet: the resync above reads it again
                        sub.lost = True
                        continue
                    final = self._final(job, actions)
                    if final is not None:
                        # The batch that finished the job may have more events queued: deliver them first.
                        while not sub.queue.empty():
                            queued = sub.queue.get_nowait()
                            yield FeedItem(queued.type, queued.body, queued.id, queued)
                        yield final
                        return
        finally:
            self.close()

    async def _snapshot(self) -> tuple[FeedItem, FeedItem | None]:
        found = await self._read()
        job, actions = found
        data = {"job": job_view(job), **status_view(job, actions), "complete": True}
        item = FeedItem.of("snapshot", data, now_id())
        return item, self._final(job, actions)

    async def _changes(self, since: datetime) -> tuple[FeedItem, FeedItem | None]:
        """The actions changed since ``since`` (minus the margin), as a partial snapshot; and the final event."""
        job = await self.repo.get_job(self.tenant, self.job_id)
        if job is None:
            raise NotFound(f"job {self.job_id} not found")
        changed = await self.repo.actions_changed_since(self.job_id, since - RESYNC_MARGIN)
        data = {
            "job": job_view(job),
            "id": job.id,
            "status": job.status.value,
            "actions": [action_status_view(a) for a, _ in changed],
            "complete": False,
        }
        item = FeedItem.of("snapshot", data, now_id())
        final = self._final(*await self._read()) if job.status.is_final else None
        return item, final

    async def _read(self) -> tuple[JobRecord, list[ActionRecord]]:
        found = await self.repo.get_job_with_actions(self.tenant, self.job_id)
        if found is None:
            raise NotFound(f"job {self.job_id} not found")
        return found

    @staticmethod
    def _final(job: JobRecord, actions: list[ActionRecord]) -> FeedItem | None:
        if not _is_final(job, actions):
            return None
        return FeedItem.of("job.final", {"job": job_view(job), **status_view(job, actions)}, now_id())


class TenantFeed:
    """Every status event of a tenant (the dashboard's lists); ``resync`` tells the client to reload its view."""

    def __init__(self, hub: EventHub, tenant: str, heartbeat: float) -> None:
        self.hub = hub
        self.tenant = tenant
        self.heartbeat = heartbeat
        self._sub: Subscription | None = hub.watch_tenant(tenant)

    def close(self) -> None:
        if self._sub is not None:
            self.hub.release(self._sub)
            self._sub = None

    async def items(self) -> AsyncIterator[FeedItem]:
        assert self._sub is not None
        sub = self._sub
        try:
            yield FeedItem.of("hello", {"tenant": self.tenant, "live": self.hub.healthy}, now_id())
            generation = self.hub.generation
            while True:
                if sub.lost or generation != self.hub.generation:
                    sub.lost, generation = False, self.hub.generation
                    yield FeedItem.of("resync", {"reason": "events were missed; reload from the API"}, now_id())
                wait = self.heartbeat if self.hub.healthy else min(self.heartbeat, TENANT_POLL)
                try:
                    event = await asyncio.wait_for(sub.queue.get(), timeout=wait)
                except TimeoutError:
                    if self.hub.healthy:
                        yield HEARTBEAT
                    else:  # no events reach this process: tell the dashboard to reload from the API meanwhile
                        yield FeedItem.of("resync", {"reason": "live events are unavailable; polling"}, now_id())
                    continue
                yield FeedItem(event.type, event.body, event.id, event)
        finally:
            self.close()
