"""JSON logs carry the action's ids; start-up checks (configuration typos, Redis eviction policy); metrics render."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobyard.config import Settings
from jobyard.errors import ConfigurationError
from jobyard.kv.redis import eviction_warning
from jobyard.logs import ContextFilter, JsonFormatter, bind_action
from jobyard.metrics import Metrics


def _json_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"jobyard.test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


async def test_json_logs_carry_the_job_and_action_of_the_task_that_logs() -> None:
    logger, stream = _json_logger()
    job_id, action_id = uuid.uuid4(), uuid.uuid4()

    async def action_task() -> None:
        bind_action(job_id, action_id)
        logger.info("working on %s", "olt-001", extra={"device": "olt-001"})

    await asyncio.create_task(action_task())
    logger.warning("outside any action")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "working on olt-001" and inside["level"] == "INFO"
    assert inside["job_id"] == str(job_id) and inside["action_id"] == str(action_id)
    assert inside["device"] == "olt-001"
    assert "job_id" not in outside and outside["level"] == "WARNING"


def test_exceptions_are_one_json_field() -> None:
    logger, stream = _json_logger()
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    entry = json.loads(stream.getvalue())
    assert "ValueError: boom" in entry["exception"]


def test_a_misspelt_setting_is_an_error_naming_the_right_one() -> None:
    with pytest.raises(ConfigurationError, match="did you mean JOBYARD_DATABASE_URL"):
        Settings.from_env({"JOBYARD_DATABSE_URL": "sqlite:///x.db"})


def test_test_and_client_variables_are_not_taken_for_typos() -> None:
    env = {"JOBYARD_TEST_REDIS_URL": "redis://x", "JOBYARD_URL": "http://x", "JOBYARD_TEST_DB_PREFIX": "p"}
    assert Settings.from_env(env).redis_url == "memory://"


def test_invalid_values_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="JOBYARD_LOG_FORMAT"):
        Settings.from_env({"JOBYARD_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigurationError, match="JOBYARD_WEBHOOK_SECRET"):
        Settings.from_env({"JOBYARD_WEBHOOK_SECRET": "short"})


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_redis_policies_that_evict_any_key_are_warned_about(policy: str) -> None:
    warning = eviction_warning(policy)
    assert warning is not None and policy in warning and "noeviction" in warning


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl", None])
def test_safe_redis_policies_are_not(policy: str | None) -> None:
    assert eviction_warning(policy) is None


def test_worker_metrics_render_action_durations_by_type() -> None:
    metrics = Metrics()
    metrics.action_duration.labels("olt.ping", "succeeded").observe(0.2)
    text = metrics.render().decode()
    assert 'jobyard_action_duration_seconds_count{outcome="succeeded",type="olt.ping"} 1.0' in text


def test_migrate_logs_its_upgrades_without_alembic_plugin_chatter(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}  # the defaults, text logs included
    env.update(JOBYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'logs.db'}", JOBYARD_LOG_LEVEL="INFO")
    done = subprocess.run(
        [sys.executable, "-m", "jobyard", "migrate"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "Running upgrade" in done.stderr
    assert "setup plugin" not in done.stderr
