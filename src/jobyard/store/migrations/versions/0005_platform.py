"""Platform: domain events outbox, schedules and their fires, webhooks and deliveries, job webhook and readiness.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _partial(name: str, table: str, columns: list[str], where: str) -> None:
    clause = sa.text(where)
    op.create_index(name, table, columns, postgresql_where=clause, sqlite_where=clause)


def upgrade() -> None:
    with op.batch_alter_table("jobyard_jobs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2000)))
        batch.add_column(sa.Column("ready_at", TS))
    # Jobs stored before this revision were published long ago: they are not waiting for job.ready.
    op.execute("UPDATE jobyard_jobs SET ready_at = created_at")
    _partial("ix_jobyard_jobs_not_ready", "jobyard_jobs", ["id"], "ready_at IS NULL")
    _partial("ix_jobyard_jobs_finished_at", "jobyard_jobs", ["finished_at"], "finished_at IS NOT NULL")
    op.create_index("ix_jobyard_outbox_action", "jobyard_outbox", ["action_id"])

    op.create_table(
        "jobyard_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Uuid, nullable=False),
        sa.Column("action_id", sa.Uuid),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )

    op.create_table(
        "jobyard_schedules",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200)),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("job", JSONType, nullable=False),
        sa.Column("missed", sa.String(16), nullable=False, server_default="skip"),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("next_fire_at", TS, nullable=False),
        sa.Column("last_fired_at", TS),
        sa.Column("last_job_id", sa.Uuid),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_schedules_tenant", "jobyard_schedules", ["tenant_id", "id"])
    _partial("ix_jobyard_schedules_due", "jobyard_schedules", ["next_fire_at"], "NOT paused")

    op.create_table(
        "jobyard_schedule_fires",
        sa.Column("schedule_id", sa.Uuid, primary_key=True),
        sa.Column("fire_time", TS, primary_key=True),
        sa.Column("job_id", sa.Uuid),
        sa.Column("error", sa.Text),
        sa.Column("fired_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_schedule_fires_fired_at", "jobyard_schedule_fires", ["fired_at"])

    op.create_table(
        "jobyard_webhooks",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("events", JSONType, nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_webhooks_tenant", "jobyard_webhooks", ["tenant_id", "id"])

    op.create_table(
        "jobyard_webhook_deliveries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("webhook_id", sa.Uuid),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Uuid),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("response_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_webhook_deliveries_tenant", "jobyard_webhook_deliveries", ["tenant_id", "id"])
    _partial(
        "ix_jobyard_webhook_deliveries_due", "jobyard_webhook_deliveries", ["next_attempt_at"], "status = 'pending'"
    )
    op.create_index("ix_jobyard_webhook_deliveries_created", "jobyard_webhook_deliveries", ["created_at"])


def downgrade() -> None:
    op.drop_table("jobyard_webhook_deliveries")
    op.drop_table("jobyard_webhooks")
    op.drop_table("jobyard_schedule_fires")
    op.drop_table("jobyard_schedules")
    op.drop_table("jobyard_events")
    op.drop_index("ix_jobyard_outbox_action", "jobyard_outbox")
    op.drop_index("ix_jobyard_jobs_finished_at", "jobyard_jobs")
    op.drop_index("ix_jobyard_jobs_not_ready", "jobyard_jobs")
    with op.batch_alter_table("jobyard_jobs") as batch:
        batch.drop_column("ready_at")
        batch.drop_column("webhook_url")
