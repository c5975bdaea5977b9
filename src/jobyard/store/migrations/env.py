"""Alembic environment: runs on the connection jobyard hands over (see ``jobyard.store.migrate``)."""

from __future__ import annotations

from alembic import context

from jobyard.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `jobyard migrate`, which provides the database connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "jobyard_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
