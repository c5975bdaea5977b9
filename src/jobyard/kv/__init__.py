"""Key-value adapters (Redis, memory) and what jobyard builds on them: results, events, caches."""

from __future__ import annotations

from jobyard.config import Settings
from jobyard.kv.base import KV


def create_kv(settings: Settings) -> KV:
    if settings.redis_url.startswith("memory://"):
        from jobyard.kv.memory import MemoryKV

        return MemoryKV()
    from jobyard.kv.redis import RedisKV

    return RedisKV(settings.redis_url)


__all__ = ["KV", "create_kv"]
