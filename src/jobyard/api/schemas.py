"""Request and response models of the HTTP API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobyard import jsonutil

NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"

JobStatusName = Literal["pending", "running", "succeeded", "failed", "cancelled"]
ActionStatusName = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]


def storable_json(value: Any) -> Any:
    """Refuse JSON the store cannot keep as it is: integers beyond 64 bits, lone surrogates, NUL characters."""
    try:
        encoded = jsonutil.dumps(value)
    except TypeError as exc:
        raise ValueError(
            f"not storable as JSON ({exc}); integers must fit in 64 bits, strings be valid Unicode"
        ) from None
    if b"\\u0000" in encoded and _has_nul(value):  # PostgreSQL's jsonb cannot hold NUL
        raise ValueError("strings must not contain NUL characters (\\u0000)")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, description="a registered action type, e.g. demo.noop")
    payload: Any = Field(None, description="any JSON value handed to the handler")
    queue: str | None = Field(None, pattern=NAME_PATTERN, description="override the action's default queue")
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description="hard time limit of one attempt, seconds")
    concurrency_key: str | None = Field(
        None, min_length=1, max_length=200, description="at most concurrency_limit actions with this key run at once"
    )
    concurrency_limit: int | None = Field(None, ge=1, le=10_000)

    _storable_payload = field_validator("payload")(storable_json)


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)
    actions: list[ActionIn] = Field(
        min_length=1, description="the job's actions (at most JOBYARD_MAX_ACTIONS_PER_JOB, 10,000 by default)"
    )
    dedup_window: float | None = Field(
        None,
        gt=0,
        le=7 * 86400,
        description="opt in: an identical submission (same content) within this many seconds returns the same job",
    )
    webhook_url: str | None = Field(
        None,
        max_length=2000,
        description="POSTed the signed job.completed event when the job is final (needs JOBYARD_WEBHOOK_SECRET)",
    )

    _storable_metadata = field_validator("metadata")(storable_json)


class JobAccepted(BaseModel):
    id: UUID
    status: JobStatusName
    status_url: str


class JobBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobIn] = Field(
        min_length=1,
        description="the jobs, stored together or not at all (at most JOBYARD_MAX_JOBS_PER_BATCH, 1,000 by default)",
    )


class JobBatchAccepted(BaseModel):
    jobs: list[JobAccepted] = Field(description="one entry per submitted job, in the order submitted")


class ProgressOut(BaseModel):
    total: int
    queued: int
    running: int
    retrying: int
    succeeded: int
    failed: int
    cancelled: int
    percent: float


class ActionStatusOut(BaseModel):
    id: UUID
    type: str
    status: ActionStatusName
    attempts: int
    progress: float
    progress_message: str | None = None
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobStatusOut(BaseModel):
    id: UUID
    status: JobStatusName
    progress: ProgressOut
    actions: list[ActionStatusOut]


class JobCounters(BaseModel):
    total: int
    succeeded: int
    failed: int
    cancelled: int
    percent: float


class JobOut(BaseModel):
    id: UUID
    name: str | None
    status: JobStatusName
    metadata: dict[str, Any]
    counters: JobCounters
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str


class ActionOut(ActionStatusOut):
    job_id: UUID
    queue: str
    payload: Any = None
    max_attempts: int
    timeout: float
    created_at: datetime


class JobDetailOut(JobOut):
    actions: list[ActionOut]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: UUID | None = Field(None, description="pass as ?cursor= to get the next (older) page")


class ResultOut(BaseModel):
    action_id: UUID
    status: ActionStatusName
    source: Literal["cache", "store"] = Field(description="cache: the full result; store: the kept summary")
    result: Any = None
    error: str | None = None


class DeadLetterOut(ActionOut):
    pass


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: UUID | None = None


class ActionTypeOut(BaseModel):
    name: str
    queue: str
    max_attempts: int
    timeout: float
    description: str


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    detail: Any


class CancelOut(BaseModel):
    id: UUID
    status: Literal["cancelled"]
    cancelled_actions: int = Field(description="waiting actions cancelled at once")
    stopping_actions: int = Field(description="running actions asked to stop through their context")


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(None, ge=1, le=100, description="attempts to give it (default: its type's)")


class RequeuedOut(BaseModel):
    id: UUID
    job_id: UUID
    status: Literal["queued"]
    max_attempts: int


EventTypeName = Literal["job.created", "job.ready", "job.completed", "action.failed"]
DeliveryStatusName = Literal["pending", "delivered", "failed"]


class JobTemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)
    actions: list[ActionIn] = Field(min_length=1, max_length=1000)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(None, max_length=200, description="five-field cron, e.g. `0 0 * * *` (daily at midnight)")
    every: str | float | None = Field(None, description="an interval instead of cron: seconds, or 90s, 30m, 2h, 1d")
    timezone: str = Field("UTC", max_length=64, description="IANA time zone the cron expression is read in")
    job: JobTemplateIn
    missed: Literal["skip", "run_once"] = Field(
        "skip", description="fire times missed while no relay ran: skip them, or run one job for them all"
    )
    paused: bool = False

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleIn:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron and every")
        return self


class ScheduleOut(BaseModel):
    id: UUID
    name: str
    cron: str | None
    every_seconds: float | None
    timezone: str
    description: str
    job: dict[str, Any]
    missed: Literal["skip", "run_once"]
    paused: bool
    next_fire_at: datetime
    last_fired_at: datetime | None
    last_job_id: UUID | None
    last_error: str | None
    created_at: datetime


class ScheduleFireOut(BaseModel):
    fire_time: datetime
    job_id: UUID | None
    error: str | None
    fired_at: datetime


class ScheduleDetailOut(ScheduleOut):
    fires: list[ScheduleFireOut]


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    events: list[EventTypeName] = Field(["job.completed"], min_length=1)
    description: str | None = Field(None, max_length=500)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool


class WebhookOut(BaseModel):
    id: UUID
    url: str
    events: list[str]
    description: str | None
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="signs every delivery; shown only in this response — store it now")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: UUID
    webhook_id: UUID | None = Field(description="null: the job's own webhook_url")
    event_id: UUID
    event_type: str
    job_id: UUID | None
    url: str
    status: DeliveryStatusName
    attempts: int
    next_attempt_at: datetime | None
    response_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: UUID | None = None


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Literal["jobs:read", "jobs:write", "admin"]] = Field(
        min_length=1, description="what the key may do: jobs:read, jobs:write, admin (admin implies the others)"
    )
    name: str | None = Field(None, min_length=1, max_length=200, description="who or what uses the key")


class KeyOut(BaseModel):
    id: UUID
    tenant: str
    name: str | None
    prefix: str = Field(description="the key's public prefix (jy_<prefix>_…), to recognise it")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreatedOut(KeyOut):
    key: str = Field(description="the key itself: shown this once, never stored (only its SHA-256 is)")


class KeyPage(BaseModel):
    items: list[KeyOut]


class AuditOut(BaseModel):
    id: int
    at: datetime
    tenant: str
    actor: str = Field(description="the key's name (or id), 'cli' or 'anonymous'")
    actor_key_id: UUID | None
    action: str = Field(description="e.g. job.submitted, job.cancelled, action.retried, key.created")
    target: str | None = Field(description="the job, action or key it was about")
    details: dict[str, Any] | None = None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: int | None = Field(None, description="pass as ?cursor= to get the next (older) page")
