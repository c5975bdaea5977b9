"""Settings from the environment, and the Yard registry."""

from __future__ import annotations

import pytest

from jobyard.config import Settings
from jobyard.errors import ConfigurationError, UnknownActionType, ValidationError
from jobyard.sdk import ActionContext, Yard, load_yard


def test_settings_read_prefixed_environment_and_overrides_win() -> None:
    env = {"JOBYARD_DATABASE_URL": "postgresql://u@h/db", "JOBYARD_RESULT_TTL": "60", "OTHER": "x"}
    settings = Settings.from_env(env, result_ttl=90)
    assert settings.database_url == "postgresql://u@h/db" and settings.result_ttl == 90
    assert Settings.from_env({}).result_ttl == 3600


@pytest.mark.parametrize(
    ("env", "named"),
    [({"JOBYARD_RESULT_TTL": "soon"}, "JOBYARD_RESULT_TTL"), ({"JOBYARD_BROKER_URL": "kafka://x"}, "BROKER_URL")],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_env(env)


def test_yard_registers_async_and_sync_handlers_with_options() -> None:
    yard = Yard()

    @yard.action("a.async", queue="fast", max_attempts=2, timeout=5)
    async def handler(ctx: ActionContext, payload: dict) -> dict:
        """Does a thing.

        More words."""
        return payload

    @yard.action("a.sync")
    def sync_handler(payload: int) -> int:
        return payload + 1

    a, s = yard.get("a.async"), yard.get("a.sync")
    assert a.is_async and a.takes_context and a.queue == "fast" and a.max_attempts == 2 and a.timeout == 5
    assert a.description == "Does a thing."
    assert not s.is_async and not s.takes_context and s.queue == "default"
    assert yard.queues == ["default", "fast"]


def test_yard_refuses_bad_names_duplicates_and_unknown_types() -> None:
    yard = Yard()
    with pytest.raises(ValidationError):
        yard.action("has space")
    yard.action("x")(lambda p: p)
    with pytest.raises(ValidationError, match="already registered"):
        yard.action("x")(lambda p: p)
    with pytest.raises(UnknownActionType, match="registered types: x"):
        yard.get("y")


def test_context_progress_is_clamped_and_idempotency_key_is_stable() -> None:
    import uuid

    aid = uuid.uuid4()
    ctx = ActionContext(
        action_id=aid, job_id=uuid.uuid4(), type_="t", attempt=2, max_attempts=3, timeout=1, worker_id="w"
    )
    ctx.progress(1.7, "done")
    assert ctx.take_progress() == (1.0, "done") and ctx.take_progress() is None
    assert ctx.idempotency_key == f"{aid}:2"


def test_load_yard_defaults_to_the_demo_and_explains_bad_specs() -> None:
    assert "demo.noop" in load_yard(None)
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_yard("no_such_module:yard")
    with pytest.raises(ConfigurationError, match=r"not a jobyard\.Yard"):
        load_yard("jobyard.demo:noop")
