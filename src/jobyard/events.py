"""Status events: published after each commit on the KV's pub/sub, for SSE, WebSocket and the dashboard.

Events are a notification, never the record: a subscriber that missed some reads the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from jobyard import jsonutil
from jobyard.errors import KVError
from jobyard.kv import keys
from jobyard.kv.base import KV, Writes
from jobyard.kv.cache import Cache

log = logging.getLogger("jobyard.events")


class EventBus:
    """Publishes status events; every event also invalidates the cached reads of its job (``cache``)."""

    def __init__(self, kv: KV, cache: Cache | None = None) -> None:
        self.kv = kv
        self.cache = cache

    async def publish(self, events: Sequence[dict[str, Any]], also: Writes | None = None) -> None:
        """Publish ``events`` as one message on the all-events channel, with ``also`` in the same round trip.

        Best effort: the events are a notification, ``also`` the fast copies (results), the store keeps the record.
        Each event's job also has its cached reads invalidated first. An event's ``ts`` is set by the publisher
        right after its commit (the stream latency is measured from it).
        """
        writes = Writes() if also is None else Writes().add(also)  # the caller's batch stays as it was
        todo: list[str] = []
        if events:
            now = time.time()
            for event in events:
                event.setdefault("ts", now)
            if self.cache is not None:
                todo, invalidation = self.cache.invalidation(sorted({str(e["job_id"]) for e in events}))
                writes.add(invalidation)
            writes.publishes.append((keys.all_events_channel(), jsonutil.dumps(list(events))))
        if not writes:
            return
        try:
            await self.kv.apply(writes)
        except KVError as exc:
            if self.cache is not None:
                self.cache.invalidation_failed(todo, exc)
            if writes.sets:
                log.warning("results not cached and events not published (%s); the store has the record", exc)
            else:
                log.debug("events not published (%s); subscribers fall back to reading the store", exc)
            return
        if self.cache is not None:
            self.cache.invalidation_sent(todo)

    async def control(self, message: dict[str, Any]) -> None:
        """An instruction to every worker (e.g. cancel running actions); workers also poll the store for it."""
        try:
            await self.kv.publish(keys.control_channel(), jsonutil.dumps(message))
        except KVError as exc:
            log.info("control message not published (%s); workers will see it at their next heartbeat", exc)
