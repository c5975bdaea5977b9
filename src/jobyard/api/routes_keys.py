"""The admin API under ``/api``: the caller's tenant's API keys, and its audit log."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from jobyard.api import deps, schemas
from jobyard.model import ApiKeyRecord
from jobyard.runtime import Runtime

router = APIRouter(prefix="/api", tags=["admin"])

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]


def key_view(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant_id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


@router.post(
    "/keys",
    status_code=201,
    response_model=schemas.KeyCreatedOut,
    summary="Create an API key for the caller's tenant; the key is in this answer only",
)
async def create_key(body: schemas.KeyIn, rt: RuntimeDep, caller: deps.Admin) -> Response:
    audit = caller.audit("key.created", details={"name": body.name, "scopes": sorted(set(body.scopes))})
    made, record = await rt.keys.create(caller.tenant, body.scopes, body.name, audit=audit)
    return deps.json_response({**key_view(record), "key": made.key}, status_code=201)


@router.get("/keys", response_model=schemas.KeyPage, summary="The caller's tenant's API keys (never the keys)")
async def list_keys(rt: RuntimeDep, caller: deps.Admin) -> Response:
    return deps.json_response({"items": [key_view(k) for k in await rt.repo.list_api_keys(caller.tenant)]})


@router.delete(
    "/keys/{key_id}",
    response_model=schemas.KeyOut,
    responses={
        404: {"model": schemas.ErrorOut, "description": "no such key for this tenant"},
        409: {"model": schemas.ErrorOut, "description": "the key is already revoked"},
    },
    summary="Revoke an API key: every API instance refuses it from the next request on",
)
async def revoke_key(key_id: UUID, rt: RuntimeDep, caller: deps.Admin) -> Response:
    record = await rt.keys.revoke(str(key_id), tenant=caller.tenant, audit=caller.audit("key.revoked"))
    return deps.json_response(key_view(record))


@router.get("/audit", response_model=schemas.AuditPage, summary="Who did what and when in the caller's tenant")
async def list_audit(
    rt: RuntimeDep,
    caller: deps.Admin,
    action: Annotated[str | None, Query(max_length=64, description="only this action, e.g. job.cancelled")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    rows = await rt.repo.list_audit(caller.tenant, before=cursor, limit=limit + 1, action=action)
    page, more = rows[:limit], len(rows) > limit
    items = [
        {
            "id": r.id,
            "at": r.at,
            "tenant": r.tenant_id,
            "actor": r.actor,
            "actor_key_id": r.actor_key_id,
            "action": r.action,
            "target": r.target,
            "details": r.details,
        }
        for r in page
    ]
    return deps.json_response({"items": items, "next_cursor": page[-1].id if more and page else None})
