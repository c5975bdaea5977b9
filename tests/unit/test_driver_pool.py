"""The hot path's asyncpg pool: its session settings, and going on without one a pooler refuses."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from jobyard.config import Settings
from jobyard.store import create_repository


async def test_a_refused_start_up_parameter_is_dropped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dict[str, str]] = []

    async def fake_create_pool(dsn: str, **kwargs: Any) -> object:
        settings = dict(kwargs["server_settings"])
        calls.append(settings)
        if "enable_seqscan" in settings:  # what PgBouncer answers to a parameter it does not track
            raise asyncpg.exceptions.ProtocolViolationError("unsupported startup parameter: enable_seqscan")
        return object()

    monkeypatch.setattr(asyncpg, "create_pool", fake_create_pool)
    repo = create_repository(Settings(database_url="postgresql://jobyard@db.invalid/jobyard"))
    with caplog.at_level(logging.WARNING, logger="jobyard"):
        pool = await repo._driver_pool()
    assert pool is not None
    assert [sorted(c) for c in calls] == [["application_name", "enable_seqscan"], ["application_name"]]
    assert "refused enable_seqscan" in caplog.text


async def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_create_pool(dsn: str, **kwargs: Any) -> object:
        raise asyncpg.exceptions.InvalidPasswordError("password authentication failed")

    monkeypatch.setattr(asyncpg, "create_pool", fake_create_pool)
    repo = create_repository(Settings(database_url="postgresql://jobyard@db.invalid/jobyard"))
    with pytest.raises(asyncpg.exceptions.InvalidPasswordError):
        await repo._driver_pool()
