"""The chaos suite's fixtures: a cluster of real processes on the real servers, a submitter, a drain, counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import services
from tests.chaos import servers
from tests.chaos.app import EFFECTS_TABLE
from tests.chaos.audit import Counts, audit
from tests.conftest import delete_rabbit_queues
from tests.processes import Cluster, cluster_env, free_port, fresh_database

REPORT: list[str] = []

CHAOS_ENV = {
    "JOBYARD_APP": "tests.chaos.app:yard",
    "JOBYARD_LEASE_SECONDS": "2",
    "JOBYARD_POLL_INTERVAL": "0.5",
    "JOBYARD_SWEEP_AFTER": "4",
    # Five processes restarted under load stay well inside PostgreSQL's default 100 connections.
    "JOBYARD_DB_POOL_SIZE": "4",
    "JOBYARD_RELAY_INTERVAL": "0.2",
    "JOBYARD_LOG_LEVEL": "INFO",
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("chaos counts (per accepted action)")
        for line in REPORT:
            terminalreporter.write_line(line)


class Chaos:
    """A running cluster plus the bookkeeping every chaos test needs."""

    def __init__(self, cluster: Cluster, dsn: str) -> None:
        self.cluster = cluster
        self.dsn = dsn
        self.accepted: list[str] = []
        self.actions_accepted = 0
        self.refused: dict[int | str, int] = {}
        self.http = httpx.AsyncClient(base_url=cluster.url, timeout=10)

    async def submit(self, actions: list[dict[str, Any]], *, retry_for: float = 60.0) -> str | None:
        """Submit like a careful client: retry on 503 or connection errors; only a 202 counts as accepted."""
        deadline = time.monotonic() + retry_for
        while time.monotonic() < deadline:
            try:
                response = await self.http.post("/api/jobs", json={"actions": actions})
            except httpx.HTTPError as exc:
                self.refused[type(exc).__name__] = self.refused.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 202:
                self.accepted.append(response.json()["id"])
                self.actions_accepted += len(actions)
                return str(response.json()["id"])
            self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
            assert response.status_code == 503, f"unexpected {response.status_code}: {response.text}"
            assert response.headers.get("retry-after"), "a 503 must say when to retry"
            await asyncio.sleep(0.2)
        return None

    async def in_flight(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM jobyard_actions WHERE status IN ('queued','retrying','running')"
                )
            )
        finally:
            await conn.close()

    async def drain(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.in_flight() == 0:
                    return
            except (OSError, asyncpg.PostgresError):
                pass
            await asyncio.sleep(0.5)

    async def counts(self, name: str) -> Counts:
        result = await audit(self.dsn, self.accepted, self.actions_accepted)
        REPORT.append(result.line(name) + (f" refused={self.refused}" if self.refused else ""))
        return result


@pytest.fixture
async def chaos(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Chaos]]]:
    """Start a cluster: ``await chaos(workers=2, relay=True, **env)``."""
    for name in ("postgresql", "rabbitmq", "redis"):
        services.require(name)
    made: list[Chaos] = []

    async def start(*, workers: int = 2, concurrency: int = 64, relay: bool = True, **env: str) -> Chaos:
        dsn = await fresh_database(f"{services.PG_DB_PREFIX}_chaos")
        conn = await asyncpg.connect(dsn)
        await conn.execute(EFFECTS_TABLE)
        await conn.close()
        if not relay:  # the test decides when messages go out: the API does not publish them either
            env.setdefault("JOBYARD_PUBLISH_ON_SUBMIT", "false")
        cluster = Cluster(env=cluster_env(dsn, CHAOS_DSN=dsn, **CHAOS_ENV, **env), port=free_port(), log_dir=tmp_path)
        migrated = cluster.run("migrate")
        assert migrated.returncode == 0, migrated.stderr
        cluster.start("api", "api", "--port", str(cluster.port))
        if relay:
            cluster.start("relay", "relay")
        for i in range(1, workers + 1):
            cluster.start(f"worker-{i}", "worker", "-c", str(concurrency))
        await cluster.wait_ready()
        made.append(Chaos(cluster, dsn))
        return made[-1]

    try:
        yield start
    finally:
        await servers.ensure_all_running()
        for c in made:
            c.cluster.stop_all()
            await c.http.aclose()
            await delete_rabbit_queues(c.cluster.env["JOBYARD_QUEUE_PREFIX"])
