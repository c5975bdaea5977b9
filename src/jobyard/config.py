"""Settings: read once at start-up from ``JOBYARD_*`` environment variables, then passed around.

Every CLI flag maps to one of these fields; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobyard.errors import ConfigurationError

#: The name this process gives its database connections (PostgreSQL's ``application_name``): the CLI sets
#: ``jobyard-<command>`` (``jobyard-worker``, ``jobyard-api``, ...), so ``pg_stat_activity`` and the server log
#: show which process holds a lock or runs a statement. A database URL's own ``application_name`` wins.
process_name = "jobyard"


def set_process_name(name: str) -> None:
    global process_name
    process_name = name[:63]  # PostgreSQL keeps NAMEDATALEN - 1 bytes of it


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
    worker_batch_interval: float = Field(
        0.02,
        ge=0,
        le=1.0,
        description="seconds a busy worker that is behind leaves between its claims, and between its completions, "
        "gathering what arrives meanwhile into one statement (busy: its previous batch held at least 8 actions; "
        "behind: more arrived while that batch was in flight); 0: never waits",
    )
    poll_interval: float = Field(1.0, gt=0, description="seconds between store polls while the broker is down")
    sweep_after: float = Field(
        60.0,
        gt=0,
        description="seconds an action may stay due without its message before a worker claims it from the store",
    )

    relay_batch: int = Field(500, ge=1, description="outbox rows published per confirm wait")
    relay_interval: float = Field(0.5, gt=0, description="seconds between outbox scans when nothing wakes the relay")
    publish_on_submit: bool = Field(
        True,
        description="the API process publishes a new job's messages right after storing it (the relay publishes "
        "whatever it could not); false: the relay publishes everything",
    )
    outbox_hold: float = Field(
        5.0, gt=0, le=300, description="seconds the relay leaves a new job's outbox rows to the API that wrote them"
    )
    message_actions: int = Field(
        10, ge=1, le=1000, description="most actions packed into one broker message (1: one per message)"
    )

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
    max_jobs_per_batch: int = Field(1_000, ge=1, description="most jobs one POST /api/jobs:batch may carry")
    max_payload_bytes: int = Field(256 * 1024, ge=1, description="largest payload of one action (JSON bytes)")
    tenant_jobs_per_minute: int = Field(0, ge=0, description="jobs one tenant may submit per minute (0: no quota)")
    tenant_max_queued_actions: int = Field(
        0, ge=0, description="actions one tenant may have waiting (queued or retrying) at once (0: no quota)"
    )

    rabbitmq_queue_type: Literal["quorum", "classic"] = "quorum"
    queue_prefix: str = Field("jobyard", pattern=r"^[A-Za-z0-9_.-]+$")
    events_exchange: str = Field(
        "jobyard.events", pattern=r"^[A-Za-z0-9_.:-]+$", description="RabbitMQ topic exchange of domain events"
    )

    schedule_grace: float = Field(
        60.0, ge=0, description="seconds a fire time may be late and still run on time (older ones were missed)"
    )

    webhook_secret: str | None = Field(
        None, min_length=16, description="signs the webhooks of jobs submitted with webhook_url"
    )
    webhook_allow_private: bool = Field(
        False, description="allow webhook targets on private, loopback, link-local or multicast addresses"
    )
    webhook_allow_hosts: str = Field(
        "", description="comma-separated host names or networks (CIDR) allowed even though they are private"
    )
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="deliveries given up after this many attempts")
    webhook_timeout: float = Field(10.0, gt=0, le=300, description="seconds one webhook request may take")
    webhook_retry_base_delay: float = Field(
        5.0, ge=0, description="first webhook retry delay ceiling, seconds (doubles each attempt, full jitter)"
    )

    gc_young_threshold: int = Field(
        2000,
        ge=0,
        description="new objects between two collections of the youngest generation by Python's cycle collector, in "
        "each worker and relay process once it has started (CPython 3.13's default; 0: the interpreter's own)",
    )

    retention_days: float = Field(30.0, ge=0, description="finished jobs are pruned after this many days (0: never)")
    retention_batch: int = Field(1000, ge=1, le=100_000, description="jobs pruned per transaction")

    metrics_port: int = Field(
        0, ge=0, le=65535, description="worker and relay processes serve Prometheus metrics on this port (0: off)"
    )
    metrics_interval: float = Field(15.0, gt=0, description="seconds between refreshes of the store's gauges")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line")
    otel: bool = Field(
        False,
        description="let FastAPI trace requests with OpenTelemetry once an OpenTelemetry SDK is configured "
        "(off: no per-request check, about 4% of the API's CPU)",
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    db_pool_size: int = Field(10, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _check_allow_hosts(cls, value: str) -> str:
        from jobyard.webhooks import parse_allow_list

        try:
            parse_allow_list(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return value

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
        """Build settings from ``JOBYARD_*`` variables; explicit overrides (CLI flags) win.

        A variable that looks like a misspelt setting (``JOBYARD_DATABSE_URL``) is an error naming the right one.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = cls.model_fields
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in known:
                values[name] = raw
            elif (guess := _misspelt(name, known)) is not None:
                raise ConfigurationError(
                    f"invalid configuration: {key} is not a setting; did you mean {ENV_PREFIX}{guess.upper()}?"
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid configuration: {problems}") from exc


def _misspelt(name: str, known: Mapping[str, Any]) -> str | None:
    """The setting ``name`` is a typo of: same length ±1 and at most two letters off (test and client
    variables such as ``JOBYARD_TEST_PG_URL`` or ``JOBYARD_URL`` are not settings and are left alone)."""
    import difflib

    if name.startswith("test_") or name in _NOT_SETTINGS:
        return None
    for candidate in difflib.get_close_matches(name, list(known), n=1, cutoff=0.85):
        if abs(len(candidate) - len(name)) <= 1:
            return candidate
    return None


# JOBYARD_* variables read by other parts than the settings (the CLI's API address, the test browser).
_NOT_SETTINGS = frozenset({"url", "api_key", "chromium"})
