"""Settings: read once at start-up from ``JOBYARD_*`` environment variables, then passed around.

Every CLI flag maps to one of these fields; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobyard.errors import ConfigurationError

ENV_PREFIX = "JOBYARD_"


class Settings(BaseModel):
    """All of jobyard's configuration. Defaults are the embedded ones (`jobyard dev`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = Field("sqlite:///jobyard.db", description="SQLite file or postgresql:// URL")
    broker_url: str = Field("memory://", description="memory:// or amqp://user:pass@host:5672/vhost")
    redis_url: str = Field("memory://", description="memory:// or redis://host:6379/0")
    app: str | None = Field(None, description="module:object holding your Yard (default: jobyard.demo:yard)")

    result_ttl: int = Field(3600, ge=1, description="seconds a full action result stays in Redis")
    cache_ttl: float = Field(30.0, ge=0, description="seconds a cached job or status read stays in Redis (0: off)")
    result_summary_bytes: int = Field(4096, ge=0, description="results up to this size are also kept in the store")
    lease_seconds: float = Field(30.0, gt=0, description="how long a claimed action stays leased without heartbeat")
    retry_base_delay: float = Field(1.0, ge=0, description="first retry delay in seconds (doubles each attempt)")
    retry_max_delay: float = Field(300.0, ge=0, description="upper bound of one retry delay")
    default_max_attempts: int = Field(3, ge=1)
    default_timeout: float = Field(300.0, gt=0, description="hard time limit of one attempt, seconds")

    worker_concurrency: int = Field(64, ge=1, description="actions one worker process runs at once")
    worker_prefetch: int = Field(0, ge=0, description="messages a worker holds unacked (0: 2 × concurrency)")
    worker_batch: int = Field(200, ge=1, description="most actions claimed or completed in one transaction")
    poll_interval: float = Field(1.0, gt=0, description="seconds between store polls while the broker is down")
    sweep_after: float = Field(
        60.0,
        gt=0,
        description="seconds an action may stay due without its message before a worker claims it from the store",
    )

    relay_batch: int = Field(500, ge=1, description="outbox rows published per confirm wait")
    relay_interval: float = Field(0.5, gt=0, description="seconds between outbox scans when nothing wakes the relay")
    message_actions: int = Field(1, ge=1, le=1000, description="actions packed into one broker message")

    stream_heartbeat: float = Field(15.0, gt=0, description="seconds between heartbeats on an idle stream")
    stream_buffer: int = Field(
        256, ge=1, description="events queued for one slow stream client before it is resynced from the store"
    )
    presence_interval: float = Field(5.0, gt=0, description="seconds between a worker's presence heartbeats")

    rate_limits: str = Field(
        "", description="per caller and route group, e.g. submit=100/minute,read=6000/minute,control=60/minute"
    )
    rate_limit_fallback: Literal["local", "open", "closed"] = Field(
        "local", description="when Redis is down: a per-process limiter, admit everything, or refuse everything"
    )

    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="auto: API keys once any exists; a loopback API may run without keys (as the default tenant); "
        "required: always; off: never (every caller is the default tenant)",
    )
    key_cache_ttl: float = Field(
        60.0, gt=0, description="seconds an API-key lookup stays cached (revocation is at once)"
    )
    session_ttl: float = Field(8 * 3600.0, gt=0, description="seconds a dashboard session lasts after sign-in")

    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)")
    max_actions_per_job: int = Field(10_000, ge=1, description="most actions one job may have")
    max_payload_bytes: int = Field(256 * 1024, ge=1, description="largest payload of one action (JSON bytes)")
    tenant_jobs_per_minute: int = Field(0, ge=0, description="jobs one tenant may submit per minute (0: no quota)")
    tenant_max_queued_actions: int = Field(
        0, ge=0, description="actions one tenant may have waiting (queued or retrying) at once (0: no quota)"
    )

    rabbitmq_queue_type: Literal["quorum", "classic"] = "quorum"
    queue_prefix: str = Field("jobyard", pattern=r"^[A-Za-z0-9_.-]+$")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "INFO"
    db_pool_size: int = Field(10, ge=1)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        if not value.startswith(("memory://", "amqp://", "amqps://")):
            raise ValueError("must be memory:// or amqp[s]://…")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "unix://")):
            raise ValueError("must be memory:// or redis[s]://…")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: str) -> str:
        from jobyard.kv.ratelimit import parse_limits

        try:
            parse_limits(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @property
    def prefetch(self) -> int:
        return self.worker_prefetch or 2 * self.worker_concurrency

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``JOBYARD_*`` variables; explicit overrides (CLI flags) win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = cls.model_fields
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in known:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid configuration: {problems}") from exc
