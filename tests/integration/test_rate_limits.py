"""Rate limits shared by two API processes through one Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests import services
from tests.conftest import delete_rabbit_queues
from tests.processes import Cluster, cluster_env, free_port, fresh_database
from tests.rawhttp import post_many


@pytest.fixture
async def two_apis(tmp_path: Path) -> AsyncIterator[tuple[Cluster, int]]:
    for name in ("postgresql", "rabbitmq", "redis"):
        services.require(name)
    client = aioredis.from_url(services.REDIS_URL)
    await client.flushdb()
    await client.aclose()
    url = await fresh_database(f"{services.PG_DB_PREFIX}_ratelimit")
    c = Cluster(env=cluster_env(url, JOBYARD_RATE_LIMITS="submit=100/minute"), port=free_port(), log_dir=tmp_path)
    assert c.run("migrate").returncode == 0
    second = free_port()
    c.start("api-1", "api", "--port", str(c.port))
    c.start("api-2", "api", "--port", str(second))
    try:
        await c.wait_ready()
        await Cluster(env=c.env, port=second, log_dir=tmp_path).wait_ready()  # both instances, not only the first
        yield c, second
    finally:
        c.stop_all()
        await delete_rabbit_queues(c.env["JOBYARD_QUEUE_PREFIX"])


async def test_1000_parallel_submissions_over_two_instances_admit_exactly_the_limit(
    two_apis: tuple[Cluster, int],
) -> None:
    cluster, second_port = two_apis
    body = b'{"actions": [{"type": "demo.noop"}]}'
    started = time.monotonic()
    halves = await asyncio.gather(
        post_many(cluster.port, "/api/jobs", body, 500, connections=50),
        post_many(second_port, "/api/jobs", body, 500, connections=50),
    )
    elapsed = time.monotonic() - started
    responses = halves[0] + halves[1]
    codes = Counter(status for status, _ in responses)
    # GCRA admits the burst (100) at once, then one more every 0.6 s (100 per minute).
    assert set(codes) == {202, 429} and codes[202] + codes[429] == 1000
    assert 100 <= codes[202] <= 100 + int(elapsed / 0.6) + 1, (codes, elapsed)
    print(f"admitted {codes[202]} of 1000 in {elapsed:.2f}s over two API processes")
    refused = next(h for status, h in responses if status == 429)
    admitted = next(h for status, h in responses if status == 202)
    assert int(refused["retry-after"]) >= 1 and refused["ratelimit-limit"] == "100"
    assert admitted["ratelimit-remaining"].isdigit()
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        for _ in range(10):  # GCRA lets one more through every 0.6 s: ask until refused
            answer = await http.post("/api/jobs", content=body, headers={"content-type": "application/json"})
            if answer.status_code == 429:
                break
        detail = answer.json()
    assert "rate limit of 100 submit requests" in detail["detail"]
    client = aioredis.from_url(services.REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match="jobyard:*")]
        ttls = {k: await client.pttl(k) for k in keys}
    finally:
        await client.aclose()
    assert any(b"ratelimit" in k for k in keys)
    assert [k for k, ttl in ttls.items() if ttl < 0] == []  # every key expires
