"""Action results: the full value in the KV with a TTL, a bounded summary in the store (the durable copy)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from jobyard import jsonutil
from jobyard.errors import KVError
from jobyard.kv import keys
from jobyard.kv.base import KV, Writes

log = logging.getLogger("jobyard.results")


def summarize(result: Any, encoded: bytes, limit: int) -> Any:
    """What the store keeps of a result (``encoded``: its JSON): itself if within ``limit`` bytes, else a marker."""
    if len(encoded) <= limit:
        return result
    return {
        "_jobyard_truncated": True,
        "size": len(encoded),
        "preview": encoded[: min(limit, 256)].decode(errors="replace"),
    }


class ResultStore:
    def __init__(self, kv: KV, ttl: int) -> None:
        self.kv = kv
        self.ttl = ttl

    def writes(self, results: Sequence[tuple[UUID, bytes]]) -> Writes:
        """The writes that store ``results`` (already JSON), for a caller that sends them with others at once."""
        return Writes(sets=[(keys.result(aid), encoded, self.ttl) for aid, encoded in results])

    async def get(self, action_id: UUID) -> tuple[bool, Any]:
        """(found, value) from the KV; (False, None) when missing, expired or Redis is down."""
        try:
            raw = await self.kv.get(keys.result(action_id))
        except KVError:
            return False, None
        if raw is None:
            return False, None
        return True, jsonutil.loads(raw)
