"""Initial schema: jobs, actions, outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobyard_jobs",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="default"),
        sa.Column("name", sa.String(200)),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_jobs_tenant_id", "jobyard_jobs", ["tenant_id", "id"])
    op.create_index("ix_jobyard_jobs_tenant_status_id", "jobyard_jobs", ["tenant_id", "status", "id"])

    op.create_table(
        "jobyard_actions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobyard_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("payload", JSONType),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("progress_message", sa.String(500)),
        sa.Column("result", JSONType),
        sa.Column("error", sa.Text),
        sa.Column("worker_id", sa.String(200)),
        sa.Column("lease_expires_at", TS),
        sa.Column("available_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_actions_job_seq", "jobyard_actions", ["job_id", "seq"])
    due = sa.text("status IN ('queued', 'retrying')")
    op.create_index(
        "ix_jobyard_actions_due",
        "jobyard_actions",
        ["queue", "available_at"],
        postgresql_where=due,
        sqlite_where=due,
    )
    running = sa.text("status = 'running'")
    op.create_index(
        "ix_jobyard_actions_lease",
        "jobyard_actions",
        ["lease_expires_at"],
        postgresql_where=running,
        sqlite_where=running,
    )
    failed = sa.text("status = 'failed'")
    op.create_index(
        "ix_jobyard_actions_dead",
        "jobyard_actions",
        ["queue", "type", "id"],
        postgresql_where=failed,
        sqlite_where=failed,
    )

    op.create_table(
        "jobyard_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("action_id", sa.Uuid, nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("available_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_outbox_due", "jobyard_outbox", ["available_at", "id"])


def downgrade() -> None:
    op.drop_table("jobyard_outbox")
    op.drop_table("jobyard_actions")
    op.drop_table("jobyard_jobs")
