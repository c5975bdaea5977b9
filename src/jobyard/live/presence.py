"""Worker presence: each worker beats into the KV (a key with a TTL, and a message on the workers channel).

API processes learn who is alive from those messages (``WorkerDirectory``); a worker silent for 3 beats is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from jobyard import jsonutil
from jobyard.errors import KVError
from jobyard.kv import keys
from jobyard.kv.base import KV

log = logging.getLogger("jobyard.live.presence")

MISSED_BEATS = 3  # a worker unheard of for this many intervals is considered gone


class PresenceBeacon:
    """Publishes one worker's heartbeat; ``describe`` returns what the worker is doing right now."""

    def __init__(self, kv: KV, worker_id: str, interval: float, describe: Callable[[], dict[str, Any]]) -> None:
        self.kv = kv
        self.worker_id = worker_id
        self.interval = interval
        self.describe = describe
        self.started_at = time.time()

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "ts": time.time(),
            "interval": self.interval,
            **self.describe(),
        }

    async def beat(self) -> None:
        body = jsonutil.dumps(self.payload())
        try:
            await self.kv.set(keys.worker_presence(self.worker_id), body, ttl=self.interval * MISSED_BEATS)
            await self.kv.publish(keys.workers_channel(), body)
        except KVError as exc:
            log.debug("presence not published (%s)", exc)

    async def leave(self) -> None:
        body = jsonutil.dumps({"id": self.worker_id, "stopped": True, "ts": time.time()})
        try:
            await self.kv.delete(keys.worker_presence(self.worker_id))
            await self.kv.publish(keys.workers_channel(), body)
        except KVError as exc:
            log.debug("presence not withdrawn (%s); it expires on its own", exc)


class WorkerDirectory:
    """The workers this API process has heard from recently, newest state of each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}

    def heard(self, beat: dict[str, Any]) -> None:
        worker_id = str(beat.get("id", ""))
        if not worker_id:
            return
        if beat.get("stopped"):
            self._seen.pop(worker_id, None)
        else:
            self._seen[worker_id] = (self._clock(), beat)

    def alive(self) -> list[dict[str, Any]]:
        now = self._clock()
        gone = [
            wid
            for wid, (seen, beat) in self._seen.items()
            if now - seen > MISSED_BEATS * float(beat.get("interval", 5.0))
        ]
        for wid in gone:
            del self._seen[wid]
        out = []
        for seen, beat in self._seen.values():
            out.append({**beat, "last_seen_seconds": round(now - seen, 1)})
        return sorted(out, key=lambda b: str(b.get("id")))
