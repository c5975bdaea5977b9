"""Table definitions (SQLAlchemy Core). The migrations in ``migrations/versions`` create the same schema."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql

metadata = MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
# BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
TS = DateTime(timezone=True)

jobs = Table(
    "jobyard_jobs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default="default"),
    Column("name", String(200)),
    Column("metadata", JSONType, nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("cancelled", Integer, nullable=False, server_default="0"),
    Column("created_at", TS, nullable=False),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("webhook_url", String(2000)),  # POSTed the job.completed event (signed) when the job is final
    Column("ready_at", TS),  # when every action's first message had left the outbox (the job.ready event)
    Index("ix_jobyard_jobs_tenant_id", "tenant_id", "id"),
    Index("ix_jobyard_jobs_tenant_status_id", "tenant_id", "status", "id"),
    # The job.ready sweep scans only jobs not ready yet; retention scans finished jobs by age.
    Index(
        "ix_jobyard_jobs_not_ready",
        "id",
        postgresql_where=text("ready_at IS NULL"),
        sqlite_where=text("ready_at IS NULL"),
    ),
    Index(
        "ix_jobyard_jobs_finished_at",
        "finished_at",
        postgresql_where=text("finished_at IS NOT NULL"),
        sqlite_where=text("finished_at IS NOT NULL"),
    ),
)

actions = Table(
    "jobyard_actions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("job_id", Uuid, ForeignKey("jobyard_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(200), nullable=False),
    Column("queue", String(200), nullable=False),
    Column("payload", JSONType),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout", Float, nullable=False),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("progress_message", String(500)),
    Column("result", JSONType),
    Column("error", Text),
    Column("concurrency_key", String(200)),
    Column("concurrency_limit", Integer, nullable=False, server_default="1"),
    Column("worker_id", String(200)),
    Column("lease_expires_at", TS),
    Column("available_at", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("updated_at", TS, nullable=False),
    Index("ix_jobyard_actions_job_seq", "job_id", "seq"),
    # Polling fallback and the reaper scan only the few non-final rows.
    Index(
        "ix_jobyard_actions_due",
        "queue",
        "available_at",
        postgresql_where=text("status IN ('queued', 'retrying')"),
        sqlite_where=text("status IN ('queued', 'retrying')"),
    ),
    Index(
        "ix_jobyard_actions_lease",
        "lease_expires_at",
        postgresql_where=text("status = 'running'"),
        sqlite_where=text("status = 'running'"),
    ),
    Index(
        "ix_jobyard_actions_concurrency",
        "concurrency_key",
        postgresql_where=text("status = 'running' AND concurrency_key IS NOT NULL"),
        sqlite_where=text("status = 'running' AND concurrency_key IS NOT NULL"),
    ),
    Index(
        "ix_jobyard_actions_dead",
        "queue",
        "type",
        "id",
        postgresql_where=text("status = 'failed'"),
        sqlite_where=text("status = 'failed'"),
    ),
)

dedup = Table(
    "jobyard_dedup",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key", String(300), primary_key=True),  # "idem:{Idempotency-Key}" or "sum:{checksum}"
    Column("job_id", Uuid, nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("expires_at", TS, nullable=False),
    Index("ix_jobyard_dedup_expires", "expires_at"),
)

locks = Table(
    "jobyard_locks",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("holder", String(64)),  # the token of the current holder; NULL when free
    Column("expires_at", TS),
    Column("fence", BigInteger, nullable=False, server_default="0"),  # +1 on every acquisition, never reset
)

outbox = Table(
    "jobyard_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("action_id", Uuid, nullable=False),
    Column("queue", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("available_at", TS, nullable=False),
    Index("ix_jobyard_outbox_due", "available_at", "id"),
    Index("ix_jobyard_outbox_action", "action_id"),  # the job.ready sweep and cancellation look rows up by action
)

# Domain events (job.created, job.ready, job.completed, action.failed): written in the transaction of the state
# change, published to the ``jobyard.events`` exchange by the leading relay (with confirms), then deleted.
events = Table(
    "jobyard_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", Uuid, nullable=False),
    Column("type", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("job_id", Uuid, nullable=False),
    Column("action_id", Uuid),
    Column("data", JSONType, nullable=False),
    Column("created_at", TS, nullable=False),
)

schedules = Table(
    "jobyard_schedules",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("cron", String(200)),  # exactly one of cron and interval_seconds is set
    Column("interval_seconds", Float),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("job", JSONType, nullable=False),  # the job template: name, actions, metadata
    Column("missed", String(16), nullable=False, server_default="skip"),  # skip | run_once
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("next_fire_at", TS, nullable=False),
    Column("last_fired_at", TS),
    Column("last_job_id", Uuid),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_jobyard_schedules_tenant", "tenant_id", "id"),
    Index(
        "ix_jobyard_schedules_due",
        "next_fire_at",
        postgresql_where=text("NOT paused"),
        sqlite_where=text("NOT paused"),
    ),
)

# One row per fire: the primary key (schedule_id, fire_time) is what makes a leader change never fire twice.
schedule_fires = Table(
    "jobyard_schedule_fires",
    metadata,
    Column("schedule_id", Uuid, primary_key=True),
    Column("fire_time", TS, primary_key=True),
    Column("job_id", Uuid),
    Column("error", Text),
    Column("fired_at", TS, nullable=False),
    Index("ix_jobyard_schedule_fires_fired_at", "fired_at"),
)

webhooks = Table(
    "jobyard_webhooks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("secret", String(200), nullable=False),  # needed in clear to sign; shown to the client once
    Column("events", JSONType, nullable=False),  # event types it receives
    Column("description", String(500)),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", TS, nullable=False),
    Index("ix_jobyard_webhooks_tenant", "tenant_id", "id"),
)

webhook_deliveries = Table(
    "jobyard_webhook_deliveries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("webhook_id", Uuid),  # NULL: the job's own webhook_url (signed with JOBYARD_WEBHOOK_SECRET)
    Column("event_id", Uuid, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("job_id", Uuid),
    Column("url", String(2000), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TS, nullable=False),
    Column("response_code", Integer),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_jobyard_webhook_deliveries_tenant", "tenant_id", "id"),
    Index(
        "ix_jobyard_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_jobyard_webhook_deliveries_created", "created_at"),
)

# API keys: only the SHA-256 of a key is kept; ``prefix`` (public, unique) finds the row for a presented key.
api_keys = Table(
    "jobyard_api_keys",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(200)),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", String(200), nullable=False),  # space-separated, e.g. "jobs:read jobs:write"
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS),
    Index("ix_jobyard_api_keys_tenant", "tenant_id", "id"),
)

# Who did what, and when: submissions, cancellations, retries, replays, key changes (and later schedules, webhooks).
audit = Table(
    "jobyard_audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("at", TS, nullable=False),
    Column("actor_key_id", Uuid),  # NULL: not a key (the CLI, or an API serving without keys)
    Column("actor", String(200), nullable=False),  # the key's name (or id), "cli" or "anonymous"
    Column("action", String(64), nullable=False),  # e.g. job.submitted, key.revoked
    Column("target", String(200)),  # the job, action or key it was about
    Column("details", JSONType),
    Index("ix_jobyard_audit_tenant_id", "tenant_id", "id"),
)
