"""Chaos: RabbitMQ, PostgreSQL and Redis restarted or stopped under load. Every count must be zero.

Each test leaves its server running (and the fixture restarts any a failed test left stopped).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import httpx

from tests.chaos import servers
from tests.chaos.conftest import Chaos


def effect(ms: int = 50) -> dict[str, Any]:
    return {"type": "chaos.effect", "payload": {"ms": ms}}


async def keep_submitting(c: Chaos, stop: asyncio.Event, *, actions: int = 10, ms: int = 50) -> None:
    while not stop.is_set():
        await c.submit([effect(ms)] * actions)
        await asyncio.sleep(0.05)


def rabbit_consumers(queue: str) -> int:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "consumers"], capture_output=True, text=True, timeout=60
    ).stdout
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


async def test_restart_rabbitmq_while_publishing_and_consuming(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2)
    stop = asyncio.Event()
    submitter = asyncio.create_task(keep_submitting(c, stop))
    await asyncio.sleep(2)
    try:
        await servers.rabbitmq_stop()
        await asyncio.sleep(1)
    finally:
        await servers.rabbitmq_start()
    await asyncio.sleep(3)
    stop.set()
    await submitter
    await c.drain()
    counts = await c.counts("b. restart RabbitMQ while publishing and consuming")
    assert counts.accepted > 0 and counts.clean, counts


async def test_rabbitmq_down_30s_jobs_finish_from_the_store_then_traffic_returns(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2)
    await servers.rabbitmq_stop()
    try:
        stop = asyncio.Event()
        submitter = asyncio.create_task(keep_submitting(c, stop, actions=5))
        await asyncio.sleep(3)
        ready = (await c.http.get("/readyz")).json()
        finished_while_down = 0
        await asyncio.sleep(27)  # 30 s down in all
        stop.set()
        await submitter
        for job_id in c.accepted:
            if (await c.http.get(f"/api/jobs/{job_id}/status")).json()["status"] == "succeeded":
                finished_while_down += 1
    finally:
        await servers.rabbitmq_start()
    assert ready["status"] == "degraded" and ready["checks"]["broker"].startswith("down")
    assert finished_while_down >= len(c.accepted) - 2, "the store fallback should have run the jobs"
    # RabbitMQ is back: the workers consume from it again and the relay empties the outbox.
    queue = f"{c.cluster.env['JOBYARD_QUEUE_PREFIX']}.default"
    deadline = time.monotonic() + 30
    while rabbit_consumers(queue) < 2:
        assert time.monotonic() < deadline, "workers did not re-subscribe to RabbitMQ"
        await asyncio.sleep(0.5)
    after = [await c.submit([effect(20)] * 5) for _ in range(5)]
    await c.drain()
    # Each process reconnects on its own backoff (up to 10 s between tries after 30 s down): the API's readiness
    # comes back once its own connection is up, which may be a little after the workers'.
    deadline = time.monotonic() + 20
    while True:
        ready_after = (await c.http.get("/readyz")).json()
        if ready_after["status"] == "ok" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    counts = await c.counts("c. RabbitMQ down 30 s while jobs are submitted")
    assert counts.accepted >= 100 and counts.clean, counts
    assert all(a is not None for a in after) and ready_after["status"] == "ok"


async def test_restart_postgresql_mid_run_answers_503_and_loses_nothing(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2)
    stop = asyncio.Event()
    submitter = asyncio.create_task(keep_submitting(c, stop))
    await asyncio.sleep(2)
    answers: list[tuple[int, float, str | None]] = []
    await servers.postgres_stop()
    try:
        async with httpx.AsyncClient(base_url=c.cluster.url, timeout=10) as probe:
            for _ in range(5):
                started = time.monotonic()
                response = await probe.post("/api/jobs", json={"actions": [effect()]})
                answers.append((response.status_code, time.monotonic() - started, response.headers.get("retry-after")))
                await asyncio.sleep(0.3)
    finally:
        await servers.postgres_start()
    await asyncio.sleep(4)
    stop.set()
    await submitter
    await c.drain()
    counts = await c.counts("d. restart PostgreSQL mid-run")
    assert all(code == 503 and retry for code, _, retry in answers), answers
    assert max(took for _, took, _ in answers) < 5, answers
    assert counts.accepted > 0 and counts.clean, counts
    after = await c.submit([effect()])  # pools reconnected
    assert after is not None


async def test_stop_and_flush_redis_mid_run_jobs_finish_results_fall_back(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2)
    stop = asyncio.Event()
    submitter = asyncio.create_task(keep_submitting(c, stop))
    await asyncio.sleep(2)
    await servers.redis_stop()
    try:
        await asyncio.sleep(4)
        ready = (await c.http.get("/readyz")).json()
    finally:
        await servers.redis_start()  # comes back empty: a stop and a flush at once
    await asyncio.sleep(2)
    stop.set()
    await submitter
    await c.drain()
    counts = await c.counts("e. stop and flush Redis mid-run")
    first = (await c.http.get(f"/api/jobs/{c.accepted[0]}/status")).json()["actions"][0]
    result = (await c.http.get(f"/api/results/{first['id']}")).json()
    assert ready["status"] == "degraded" and ready["checks"]["redis"].startswith("down")
    assert counts.accepted > 0 and counts.clean, counts
    assert result["source"] == "store" and result["result"] == {"attempt": first["attempts"]}
