"""Deduplication keys (Idempotency-Key, content checksums) and per-key concurrency limits on actions.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobyard_dedup",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("job_id", sa.Uuid, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_jobyard_dedup_expires", "jobyard_dedup", ["expires_at"])
    op.create_table(
        "jobyard_locks",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(64)),
        sa.Column("expires_at", TS),
        sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    )
    with op.batch_alter_table("jobyard_actions") as batch:
        batch.add_column(sa.Column("concurrency_key", sa.String(200)))
        batch.add_column(sa.Column("concurrency_limit", sa.Integer, nullable=False, server_default="1"))
    running = sa.text("status = 'running' AND concurrency_key IS NOT NULL")
    op.create_index(
        "ix_jobyard_actions_concurrency",
        "jobyard_actions",
        ["concurrency_key"],
        postgresql_where=running,
        sqlite_where=running,
    )


def downgrade() -> None:
    op.drop_index("ix_jobyard_actions_concurrency", "jobyard_actions")
    with op.batch_alter_table("jobyard_actions") as batch:
        batch.drop_column("concurrency_limit")
        batch.drop_column("concurrency_key")
    op.drop_table("jobyard_locks")
    op.drop_table("jobyard_dedup")
