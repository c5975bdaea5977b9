"""API-key look-ups cached in one Redis by two API instances: revocation reaches both at once, over pub/sub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from jobyard.api import create_app
from jobyard.config import Settings
from jobyard.demo import yard
from jobyard.runtime import Runtime
from tests import services
from tests.conftest import _truncate


@pytest.fixture
async def two_instances(pg_database: str, tmp_path: Path) -> AsyncIterator[list[tuple[Runtime, httpx.AsyncClient]]]:
    services.require("redis")
    await _truncate(pg_database)
    client = aioredis.from_url(services.REDIS_URL)
    await client.flushdb()
    await client.aclose()
    # Look-ups may stay cached for an hour: only the pub/sub invalidation can explain a refusal.
    settings = Settings(database_url=pg_database, redis_url=services.REDIS_URL, key_cache_ttl=3600)
    async with AsyncExitStack() as stack:
        instances = []
        for _ in range(2):
            runtime = Runtime(settings)
            app = create_app(settings, yard, runtime=runtime, migrate=True)
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://jobyard.test")
            await stack.enter_async_context(http)
            instances.append((runtime, http))
        yield instances


async def _status(http: httpx.AsyncClient, key: str) -> int:
    return (await http.get("/api/jobs", headers={"Authorization": f"Bearer {key}"})).status_code


async def test_revoking_on_one_instance_refuses_the_key_on_the_other_at_once(
    two_instances: list[tuple[Runtime, httpx.AsyncClient]],
) -> None:
    (rt_a, http_a), (rt_b, http_b) = two_instances
    rt_b.keys.cache.local_ttl = 3600.0  # B keeps its own copy for an hour unless told to drop it
    made, record = await rt_a.keys.create("acme", ["admin"], "shared")
    assert [await _status(http_a, made.key), await _status(http_b, made.key)] == [200, 200]
    reads_before = rt_b.keys.cache.stats.local_hits
    assert await _status(http_b, made.key) == 200 and rt_b.keys.cache.stats.local_hits == reads_before + 1

    other, _ = await rt_a.keys.create("acme", ["admin"], "admin")
    revoke = await http_a.delete(f"/api/keys/{record.id}", headers={"Authorization": f"Bearer {other.key}"})
    assert revoke.status_code == 200
    assert await _status(http_a, made.key) == 401  # the revoking instance: the very next request
    started = time.monotonic()
    while await _status(http_b, made.key) != 401:  # the other: as soon as the announcement arrives
        assert time.monotonic() - started < 2.0, "instance B still accepts a revoked key"
        await asyncio.sleep(0.01)
    assert await _status(http_b, other.key) == 200


async def test_every_key_the_key_cache_writes_expires(two_instances: list[tuple[Runtime, httpx.AsyncClient]]) -> None:
    (rt_a, http_a), _ = two_instances
    made, record = await rt_a.keys.create("acme", ["jobs:read"])
    assert await _status(http_a, made.key) == 200
    assert await _status(http_a, "jy_0123456789ab_" + "x" * 43) == 401  # a negative answer is cached too
    await rt_a.keys.revoke(str(record.id))
    client = aioredis.from_url(services.REDIS_URL)
    try:
        names = [k async for k in client.scan_iter(match="jobyard:*keys*")]
        ttls = {k: await client.pttl(k) for k in names}
    finally:
        await client.aclose()
    assert any(b"0123456789ab" in k for k in names) and any(record.prefix.encode() in k for k in names)
    assert [k for k, ttl in ttls.items() if ttl < 0] == []
