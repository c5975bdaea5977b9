"""Every key jobyard writes to Redis has a time to live (so a full Redis never holds stale state forever)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobyard.demo import yard as demo_yard
from jobyard.kv.redis import RedisKV
from tests import services
from tests.conftest import _truncate
from tests.harness import settings_for, stack


async def test_every_jobyard_key_in_redis_has_a_ttl(tmp_path: Path, pg_database: str) -> None:
    services.require("rabbitmq")
    services.require("redis")
    await _truncate(pg_database)
    redis = RedisKV(services.REDIS_URL)
    await redis._client.flushdb()
    # 100/minute: each read moves the limit's key 0.6 s ahead (at 1000/minute it lived 60 ms, less than the scan took)
    settings = settings_for("servers", tmp_path, pg_database, rate_limits="read=100/minute", presence_interval=0.2)
    try:
        async with stack(settings, demo_yard) as s:
            job_id = await s.submit([{"type": "demo.noop", "payload": {"n": n}} for n in range(5)])
            await s.wait(job_id)
            await s.http.get(f"/api/jobs/{job_id}")  # cache and rate-limit keys
            async with s.runtime.lock("ttl-check", ttl=30):
                keys = [k async for k in redis._client.scan_iter(match="jobyard:*")]
                await asyncio.sleep(0.3)  # a worker presence beat
                keys += [k async for k in redis._client.scan_iter(match="jobyard:*")]
            ttls = {k.decode(): await redis._client.pttl(k) for k in set(keys)}
    finally:
        await redis._client.flushdb()
        await redis.close()
    kinds = {key.split(":")[1] for key in ttls}
    assert {"result", "cache", "ratelimit", "lock", "worker"} <= kinds, kinds
    assert [key for key, ttl in ttls.items() if ttl == -1] == []  # -1: no expiry (-2: already gone)
