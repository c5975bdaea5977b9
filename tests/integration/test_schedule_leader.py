"""Two `jobyard relay` processes on PostgreSQL: a schedule fires each fire time exactly once across a leader change."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests import services
from tests.conftest import delete_rabbit_queues
from tests.processes import Cluster, cluster_env, free_port, fresh_database

LEADER_LINE = "this relay is now the leader"


async def _fires(url: str) -> tuple[list[tuple[Any, Any]], list[str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT fire_time, job_id FROM jobyard_schedule_fires ORDER BY fire_time")
        jobs = await conn.fetch("SELECT metadata->>'fire_time' AS fire_time FROM jobyard_jobs")
    finally:
        await conn.close()
    return [(r["fire_time"], r["job_id"]) for r in rows], [j["fire_time"] for j in jobs]


async def _wait_for_leader(cluster: Cluster, names: list[str], timeout: float = 20) -> str:
    async with asyncio.timeout(timeout):
        while True:
            for name in names:
                if LEADER_LINE in (cluster.log_dir / f"{name}.log").read_text():
                    return name
            await asyncio.sleep(0.1)


async def test_a_schedule_fires_exactly_once_per_fire_time_across_a_leader_change(tmp_path: Path) -> None:
    for name in ("postgresql", "rabbitmq", "redis"):
        services.require(name)
    url = await fresh_database(f"{services.PG_DB_PREFIX}_leader")
    c = Cluster(
        env=cluster_env(url, JOBYARD_LEASE_SECONDS="2", JOBYARD_LOG_LEVEL="INFO", JOBYARD_RELAY_INTERVAL="0.1"),
        port=free_port(),
        log_dir=tmp_path,
    )
    assert c.run("migrate").returncode == 0
    c.start("api", "api", "--port", str(c.port))
    c.start("relay-a", "relay")
    try:
        await c.wait_ready()
        first = await _wait_for_leader(c, ["relay-a"])
        c.start("relay-b", "relay")
        async with httpx.AsyncClient(base_url=c.url) as http:
            body = {"name": "tick", "every": "1s", "job": {"actions": [{"type": "demo.noop"}]}}
            assert (await http.post("/api/schedules", json=body)).status_code == 201
        await asyncio.sleep(3)
        before, _ = await _fires(url)
        assert len(before) >= 2, c.logs()
        c.stop(first, sig=signal.SIGKILL)  # the leader dies holding its advisory lock: the server releases it
        assert await _wait_for_leader(c, ["relay-b"]) == "relay-b"
        await asyncio.sleep(4)
        fires, job_fire_times = await _fires(url)
    finally:
        c.stop_all()
        await delete_rabbit_queues(c.env["JOBYARD_QUEUE_PREFIX"])
    assert len(fires) > len(before) + 1, c.logs()  # the new leader went on firing
    times = [t for t, _ in fires]
    assert len(times) == len(set(times))  # no fire time twice (the primary key would refuse it anyway)
    assert all(job_id is not None for _, job_id in fires)
    counts = Counter(job_fire_times)
    assert len(counts) == len(fires) and set(counts.values()) == {1}  # exactly one job per fire time
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps == {1.0}, gaps  # none missed across the change either: within the grace, late ones catch up
