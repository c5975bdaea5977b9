"""Tenants: API keys (stored hashed) and the audit log.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobyard_api_keys",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_jobyard_api_keys_tenant", "jobyard_api_keys", ["tenant_id", "id"])
    op.create_table(
        "jobyard_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor_key_id", sa.Uuid),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("details", JSONType),
    )
    op.create_index("ix_jobyard_audit_tenant_id", "jobyard_audit", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobyard_audit_tenant_id", "jobyard_audit")
    op.drop_table("jobyard_audit")
    op.drop_index("ix_jobyard_api_keys_tenant", "jobyard_api_keys")
    op.drop_table("jobyard_api_keys")
