"""A whole jobyard in this process: API (over ASGI), relay and workers on one runtime.

``stack`` builds it on the embedded defaults or on the real servers, so every flow test runs on both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from jobyard.api import create_app
from jobyard.config import Settings
from jobyard.relay import Relay
from jobyard.runtime import Runtime
from jobyard.sdk import Yard
from jobyard.worker import Worker
from tests import services

FAST = {
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.2,
    "relay_interval": 0.05,
    "poll_interval": 0.1,
    "lease_seconds": 5.0,
}


class Stack:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        http: httpx.AsyncClient,
        workers: list[Worker],
        app: Any,
        relay: Relay | None = None,
    ) -> None:
        self.app = app
        self.relay = relay
        self.settings = settings
        self.runtime = runtime
        self.http = http
        self.workers = workers

    async def submit(self, actions: list[dict[str, Any]], **fields: Any) -> str:
        response = await self.http.post("/api/jobs", json={"actions": actions, **fields})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def status(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/jobs/{job_id}/status")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if status["status"] in ("succeeded", "failed", "cancelled"):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not final after {timeout}s: {status}")
            await asyncio.sleep(0.05)


def settings_for(kind: str, tmp_path: Path, pg_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {**FAST, **overrides}
    if kind == "embedded":
        values.update(
            database_url=f"sqlite:///{tmp_path / 'jobyard.db'}", broker_url="memory://", redis_url="memory://"
        )
    else:
        assert pg_url is not None
        values.update(
            database_url=pg_url,
            broker_url=services.AMQP_URL,
            redis_url=services.REDIS_URL,
            queue_prefix=f"jobyard-test-{uuid.uuid4().hex[:8]}",
        )
    return Settings(**values)


@asynccontextmanager
async def stack(settings: Settings, yard: Yard, *, workers: int = 1, kv: Any = None) -> AsyncIterator[Stack]:
    runtime = Runtime(settings, kv=kv)
    app = create_app(settings, yard, runtime=runtime, migrate=True)
    async with app.router.lifespan_context(app):
        relay = Relay(settings=settings, repo=runtime.repo, broker=runtime.broker, events=runtime.events, yard=yard)
        await relay.start()
        started = []
        for i in range(workers):
            worker = Worker(
                settings=settings,
                repo=runtime.repo,
                broker=runtime.broker,
                results=runtime.results,
                events=runtime.events,
                yard=yard,
                worker_id=f"test-worker-{i}",
                metrics=runtime.metrics,  # as `jobyard worker` and `jobyard dev` do: /metrics shows the workers' too
            )
            await worker.start()
            started.append(worker)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://jobyard.test") as http:
            try:
                yield Stack(settings, runtime, http, started, app, relay)
            finally:
                for worker in started:
                    await worker.stop(grace=2)
                await relay.stop()
    if settings.queue_prefix.startswith("jobyard-test-"):
        from tests.conftest import delete_rabbit_queues

        await delete_rabbit_queues(settings.queue_prefix)


async def make_key(s: Stack, tenant: str, *scopes: str, name: str | None = None) -> tuple[str, str]:
    """A new API key of ``tenant`` with ``scopes``: (the key, its id)."""
    made, record = await s.runtime.keys.create(tenant, list(scopes) or ["jobs:read", "jobs:write"], name)
    return made.key, str(record.id)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
