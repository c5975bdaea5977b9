"""`jobyard keys …`: create, list and revoke API keys, straight in the store (run it where the API's settings are).

A created key is printed once, on standard output; the store keeps only its SHA-256.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from jobyard.config import Settings

keys_app = typer.Typer(
    name="keys", help="Create, list and revoke API keys (in the store of JOBYARD_DATABASE_URL).", no_args_is_help=True
)

CLI_ACTOR = "cli"


def _with_keys(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``work(directory)`` against the store and KV of ``settings``, closing both afterwards."""
    from jobyard.auth import KeyDirectory
    from jobyard.cli import _run
    from jobyard.kv import create_kv
    from jobyard.store import create_repository

    async def main() -> None:
        repo = create_repository(settings)
        kv = create_kv(settings)
        try:
            await work(KeyDirectory(repo, kv, settings.key_cache_ttl))
        finally:
            await kv.close()
            await repo.close()

    _run(main)


def _settings() -> Settings:
    from jobyard.cli import _settings as read_settings

    return read_settings()


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the key acts for")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="jobs:read, jobs:write or admin (repeat, or comma-separate)")
    ],
    name: Annotated[str | None, typer.Option("--name", help="who or what uses the key")] = None,
) -> None:
    """Create a key and print it (once: it cannot be shown again)."""
    from jobyard.errors import ValidationError
    from jobyard.model import AuditEntry

    scopes = [s.strip() for item in scope for s in item.split(",") if s.strip()]

    async def work(directory: Any) -> None:
        audit = AuditEntry(tenant, "key.created", CLI_ACTOR, details={"name": name, "scopes": sorted(set(scopes))})
        try:
            made, record = await directory.create(tenant, scopes, name, audit=audit)
        except ValidationError as exc:
            typer.secho(f"error: {exc.message}", fg="red", err=True)
            raise typer.Exit(2) from exc
        typer.echo(made.key)
        typer.secho(
            f"key {record.id} for tenant {record.tenant_id} ({' '.join(record.scopes)}): "
            "store it now, it is not shown again",
            err=True,
        )

    _with_keys(_settings(), work)


@keys_app.command("list")
def list_keys(tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's keys")] = None) -> None:
    """List keys (never the keys themselves): id, prefix, tenant, scopes, name, and when revoked."""

    async def work(directory: Any) -> None:
        records = await directory.repo.list_api_keys(tenant)
        if not records:
            typer.echo("no API keys")
        for r in records:
            state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
            typer.echo(
                f"{r.id}  jy_{r.prefix}_…  {r.tenant_id:<16} {','.join(r.scopes):<28} {state:<24} {r.name or ''}"
            )

    _with_keys(_settings(), work)


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="the key's id or prefix")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="only if it belongs to this tenant")] = None,
) -> None:
    """Revoke a key: the APIs refuse it from their next request on (through Redis)."""
    from jobyard.errors import Conflict
    from jobyard.model import AuditEntry

    settings = _settings()

    async def work(directory: Any) -> None:
        found = await directory.repo.find_api_key(key, tenant_id=tenant)
        if found is None:
            typer.secho(f"error: API key {key} not found", fg="red", err=True)
            raise typer.Exit(1)
        audit = AuditEntry(found.tenant_id, "key.revoked", CLI_ACTOR)
        try:
            found = await directory.revoke(str(found.id), tenant=found.tenant_id, audit=audit)
        except Conflict as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"key {found.id} (jy_{found.prefix}_…) of tenant {found.tenant_id} revoked")
        if settings.redis_url.startswith("memory://"):
            typer.secho(
                "note: with JOBYARD_REDIS_URL=memory:// a running API notices within JOBYARD_KEY_CACHE_TTL seconds; "
                "revoke through the API (DELETE /api/keys/ID) for immediate effect",
                err=True,
            )

    _with_keys(settings, work)
