"""Shared fixtures: each adapter in its real and in-memory form, behind the same fixture names."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jobyard.broker.memory import MemoryBroker
from jobyard.broker.rabbitmq import RabbitBroker
from jobyard.config import Settings
from jobyard.kv.memory import MemoryKV
from jobyard.kv.redis import RedisKV
from jobyard.store import Repository, create_repository
from tests import services

PG_TEST_DB = f"{services.PG_DB_PREFIX}_test"
TABLES = (
    "jobyard_outbox, jobyard_actions, jobyard_jobs, jobyard_events, jobyard_schedules, jobyard_schedule_fires, "
    "jobyard_webhooks, jobyard_webhook_deliveries, jobyard_api_keys, jobyard_audit, jobyard_dedup"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        for folder, marker in (("integration", "integration"), ("chaos", "chaos"), ("e2e", "e2e")):
            if f"/{folder}/" in path:
                item.add_marker(getattr(pytest.mark, marker))


# pytest-timeout's signal method fails a test by raising from a SIGALRM handler; inside an event loop that
# exception can land in a callback, where asyncio logs and drops it, or the loop's teardown can wait on tasks that
# never end. Either way the run would hang with nothing to show. This watchdog runs in its own C thread: a test
# still going this long after pytest-timeout should have stopped it dumps every thread's stack and ends the run.
WATCHDOG_MARGIN = 120.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    option = item.config.getoption("timeout", None)
    configured = option if option is not None else item.config.getini("timeout")
    limit = float(marker.args[0]) if marker is not None and marker.args else float(configured or 0)
    if limit > 0:
        faulthandler.dump_traceback_later(limit + WATCHDOG_MARGIN, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def run_in_fresh_loop(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on its own loop in a helper thread (safe inside async fixtures)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(make())).result()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head; its URL."""
    services.require("postgresql")

    async def recreate() -> None:
        conn = await asyncpg.connect(services.PG_ADMIN_URL)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {PG_TEST_DB}")
        finally:
            await conn.close()
        repo = create_repository(Settings(database_url=services.pg_url(PG_TEST_DB)))
        await repo.migrate()
        await repo.close()

    run_in_fresh_loop(recreate)
    yield services.pg_url(PG_TEST_DB)


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    """The store, on SQLite and on PostgreSQL (emptied before each test)."""
    if request.param == "sqlite":
        repository = create_repository(Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"))
        await repository.migrate()
    else:
        url = request.getfixturevalue("pg_database")
        await _truncate(url)
        repository = create_repository(Settings(database_url=url))
    yield repository
    await repository.close()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[MemoryBroker | RabbitBroker]:
    """The broker, in memory and on RabbitMQ (queues under a unique prefix, deleted afterwards)."""
    if request.param == "memory":
        memory = MemoryBroker()
        await memory.connect()
        yield memory
        await memory.close()
        return
    services.require("rabbitmq")
    prefix = f"jobyard-test-{uuid.uuid4().hex[:8]}"
    rabbit = RabbitBroker(services.AMQP_URL, prefix=prefix, queue_type="quorum")
    await rabbit.connect()
    assert await rabbit.wait_connected(10), "RabbitMQ did not accept a connection"
    yield rabbit
    await rabbit.close()
    await delete_rabbit_queues(prefix)


async def delete_rabbit_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(services.AMQP_URL)
    try:
        for suffix in ("q", "q1", "q2", "default", "dead-letters", "diagnostics", "config"):
            channel = await connection.channel()
            await channel.queue_delete(f"{prefix}.{suffix}")
            await channel.close()
    finally:
        await connection.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[MemoryKV | RedisKV]:
    """The KV, in memory and on Redis (test database, flushed before each test)."""
    if request.param == "memory":
        memory = MemoryKV()
        yield memory
        await memory.close()
        return
    services.require("redis")
    redis_kv = RedisKV(services.REDIS_URL)
    await redis_kv._client.flushdb()
    yield redis_kv
    await redis_kv._client.flushdb()
    await redis_kv.close()
