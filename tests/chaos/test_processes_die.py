"""Chaos: workers killed, relays crashing mid-publish, duplicates, stalls. Every count must be zero."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import asyncpg

from tests.chaos.conftest import Chaos


def effect(ms: int = 50) -> dict[str, Any]:
    return {"type": "chaos.effect", "payload": {"ms": ms}}


async def test_kill_9_a_worker_five_times_with_500_in_flight(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2, concurrency=300)
    stop = asyncio.Event()

    async def top_up() -> None:
        """Keep well over 500 actions in flight however fast the workers drain them (machine speed varies)."""
        while not stop.is_set():
            if await c.in_flight() < 1500:
                await asyncio.gather(*(c.submit([effect(400)] * 50) for _ in range(10)))
            else:
                await asyncio.sleep(0.1)

    async def at_least(count: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:  # polling the store is the point: it counts what is in flight
            now = await c.in_flight()
            if now >= count or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.05)

    submitter = asyncio.create_task(top_up())
    in_flight_at_kill = []
    for round_ in range(5):
        victim = f"worker-{round_ % 2 + 1}"
        in_flight_at_kill.append(await at_least(500))
        c.cluster.stop(victim, signal.SIGKILL)
        await asyncio.sleep(0.5)
        c.cluster.start(victim, "worker", "-c", "300")
        await asyncio.sleep(1.0)
    stop.set()
    await submitter
    await c.drain()
    counts = await c.counts("a. kill -9 a worker x5")
    assert min(in_flight_at_kill) >= 500, in_flight_at_kill
    assert counts.accepted == c.actions_accepted > 0 and counts.clean, counts
    assert counts.effects >= counts.succeeded == counts.accepted


async def test_kill_9_the_api_while_it_accepts_jobs_and_none_it_accepted_is_lost(chaos: Any) -> None:
    """The API publishes what it stores itself (the handoff); killed between its commit and its publish, the
    outbox rows it held back are published by the relay once their hold is over."""
    c: Chaos = await chaos(workers=2, JOBYARD_OUTBOX_HOLD="1")
    stop = asyncio.Event()

    async def submitter() -> None:
        while not stop.is_set():
            await c.submit([effect(10)] * 5, retry_for=30)

    submitters = [asyncio.create_task(submitter()) for _ in range(16)]
    held_at_kill = []
    for _ in range(3):
        await asyncio.sleep(1.0)
        c.cluster.stop("api", signal.SIGKILL)
        conn = await asyncpg.connect(c.dsn)
        try:  # rows the dead API had neither published nor deleted yet (0 when the kill missed that window)
            held_at_kill.append(int(await conn.fetchval("SELECT count(*) FROM jobyard_outbox")))
        finally:
            await conn.close()
        c.cluster.start("api", "api", "--port", str(c.cluster.port))
        await c.cluster.wait_ready()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*submitters)
    await c.drain()
    counts = await c.counts(f"i. kill -9 the API x3 while it accepts jobs (outbox rows left at each: {held_at_kill})")
    assert counts.accepted == c.actions_accepted > 0 and counts.clean, counts
    assert counts.effects >= counts.succeeded == counts.accepted


async def test_a_crashed_relay_republishes_and_each_action_is_recorded_once(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2, relay=False)
    for _ in range(10):
        await c.submit([effect(20)] * 20)
    # The relay dies after RabbitMQ confirmed the messages and before it deleted the outbox rows:
    # simulated in-process by publishing for real, then failing the transaction that would delete them.
    from jobyard.config import Settings
    from jobyard.relay import Relay
    from jobyard.runtime import Runtime

    env = c.cluster.env
    settings = Settings(
        database_url=c.dsn,
        broker_url=env["JOBYARD_BROKER_URL"],
        redis_url=env["JOBYARD_REDIS_URL"],
        queue_prefix=env["JOBYARD_QUEUE_PREFIX"],
    )
    runtime = Runtime(settings)
    await runtime.start()
    relay = Relay(settings=settings, repo=runtime.repo, broker=runtime.broker)

    class RelayCrashed(Exception):
        pass

    async def publish_then_crash(rows: Any) -> None:
        await relay._publish(rows)
        raise RelayCrashed

    crashed = 0
    while await runtime.repo.outbox_size() and crashed < 3:
        try:
            await runtime.repo.publish_outbox(500, publish_then_crash)
        except RelayCrashed:
            crashed += 1
    await runtime.close()
    c.cluster.start("relay", "relay")  # a fresh relay publishes the same rows again
    await c.drain()
    counts = await c.counts("f. relay killed between publish and mark-sent")
    assert crashed >= 1 and counts.accepted == 200 and counts.clean, counts


async def test_the_same_message_twice_at_once_completes_once(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2, relay=False)
    job_id = await c.submit([effect(300)] * 50)
    assert job_id is not None
    conn = await asyncpg.connect(c.dsn)
    try:
        bodies = await conn.fetch("SELECT queue, body FROM jobyard_outbox")
    finally:
        await conn.close()
    import aio_pika

    from jobyard import messages

    connection = await aio_pika.connect(c.cluster.env["JOBYARD_BROKER_URL"])
    channel = await connection.channel(publisher_confirms=True)
    prefix = c.cluster.env["JOBYARD_QUEUE_PREFIX"]
    for row in bodies:  # every message twice, back to back: two workers get the copies at the same time
        body = messages.pack([bytes(row["body"])])
        for _ in range(2):
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=f"{prefix}.{row['queue']}")
    await connection.close()
    c.cluster.start("relay", "relay")  # and the outbox rows themselves: a third copy of each
    await c.drain()
    counts = await c.counts("g. the same message delivered twice at once")
    assert counts.clean and counts.effects == counts.succeeded == 50, counts


async def test_a_stalled_worker_loses_its_lease_and_its_late_write_is_rejected(chaos: Any) -> None:
    c: Chaos = await chaos(workers=1)
    job_id = await c.submit([effect(3000)])
    assert job_id is not None
    await asyncio.sleep(1.0)  # running on worker-1
    c.cluster.procs["worker-1"].send_signal(signal.SIGSTOP)
    c.cluster.start("worker-2", "worker")
    deadline = time.monotonic() + 30
    conn = await asyncpg.connect(c.dsn)
    try:
        while await conn.fetchval("SELECT attempt FROM jobyard_actions WHERE job_id = $1", job_id) < 2:
            assert time.monotonic() < deadline, "no other worker took the action over"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    c.cluster.procs["worker-1"].send_signal(signal.SIGCONT)
    await c.drain()
    await asyncio.sleep(3.5)  # worker-1 wakes, finishes attempt 1 and tries to record it
    counts = await c.counts("h. SIGSTOP a worker past its lease, then SIGCONT")
    status = (await c.http.get(f"/api/jobs/{job_id}/status")).json()
    assert counts.clean and counts.succeeded == 1, counts
    assert status["actions"][0]["attempts"] == 2
    assert "stale completion rejected by the fence" in (c.cluster.log_dir / "worker-1.log").read_text()


async def test_a_poison_action_that_kills_its_worker_ends_dead_lettered(chaos: Any) -> None:
    c: Chaos = await chaos(workers=2)
    poison = await c.submit([{"type": "chaos.crash"}])
    normal = [await c.submit([effect(20)] * 10) for _ in range(5)]
    deadline = time.monotonic() + 60
    while True:  # a supervisor restarting the workers the poison kills
        for name in ("worker-1", "worker-2"):
            if c.cluster.procs[name].poll() is not None:
                c.cluster.procs.pop(name)
                c.cluster.start(name, "worker")
        status = (await c.http.get(f"/api/jobs/{poison}/status")).json()
        if status["status"] == "failed":
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.3)
    await c.drain()
    dead = (await c.http.get("/api/dead-letters", params={"type": "chaos.crash"})).json()["items"]
    normal_final = [(await c.http.get(f"/api/jobs/{j}/status")).json()["status"] for j in normal]
    c.accepted.remove(poison)
    c.actions_accepted -= 1
    counts = await c.counts("poison action (kills its worker every time)")
    assert [d["attempts"] for d in dead] == [3] and "WorkerLost" in dead[0]["error"]
    assert normal_final == ["succeeded"] * 5 and counts.clean
