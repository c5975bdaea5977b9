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
from jobyard.kv.base import KV
from jobyard.kv.cache import Cache

log = logging.getLogger("jobyard.events")


class EventBus:
    """Publishes status events; every event also invalidates the cached reads of its job (``cache``)."""

    def __init__(self, kv: KV, cache: Cache | None = None) -> None:
        self.kv = kv
        self.cache = cache

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish each event on its job's channel, its tenant's channel and the all-events channel; best effort.

        An event's ``ts`` is set by the publisher right after its commit (the stream latency is measured from it).
        """
        if not events:
            return
        now = time.time()
        out: list[tuple[str, bytes]] = []
        for event in events:
            event.setdefault("ts", now)
            body = jsonutil.dumps(event)
            out.append((keys.job_events_channel(event["job_id"]), body))
            out.append((keys.all_events_channel(), body))
            if "tenant_id" in event:
                out.append((keys.tenant_events_channel(event["tenant_id"]), body))
        if self.cache is not None:
            await self.cache.invalidate(sorted({str(e["job_id"]) for e in events}))
        try:
            await self.kv.publish_many(out)
        except KVError as exc:
            log.debug("events not published (%s); subscribers fall back to reading the store", exc)

    async def control(self, message: dict[str, Any]) -> None:
        """An instruction to every worker (e.g. cancel running actions); workers also poll the store for it."""
        try:
            await self.kv.publish(keys.control_channel(), jsonutil.dumps(message))
        except KVError as exc:
            log.info("control message not published (%s); workers will see it at their next heartbeat", exc)
