"""Flow tests run twice: on the embedded defaults and on the real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobyard.config import Settings
from tests import services
from tests.conftest import _truncate


async def _flush_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(services.REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture(params=["embedded", pytest.param("servers", marks=pytest.mark.integration)])
async def stack_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "servers":
        services.require("rabbitmq")
        services.require("redis")
        await _truncate(request.getfixturevalue("pg_database"))
        await _flush_redis()  # cached key look-ups and tenant quota counters must not leak between tests
    return str(request.param)


@pytest.fixture
def make_settings(stack_kind: str, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    from tests.harness import settings_for

    def make(**overrides: object) -> Settings:
        pg = request.getfixturevalue("pg_database") if stack_kind == "servers" else None
        return settings_for(stack_kind, tmp_path, pg, **overrides)

    return make
