"""Webhooks under ``/api/webhooks``: the tenant's endpoints (the secret is shown once) and the delivery log."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from jobyard.api import deps, schemas
from jobyard.api.views import delivery_view, webhook_view
from jobyard.ids import uuid7
from jobyard.runtime import Runtime
from jobyard.webhooks import WebhookTargetRefused

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorOut, "description": "no such webhook"}}


async def check_target(rt: Runtime, url: str, loc: tuple[str | int, ...]) -> None:
    """Refuse a URL the SSRF guard would refuse at delivery, now, as a 422 naming the field."""
    try:
        await rt.webhook_guard.check(url)
    except WebhookTargetRefused as exc:
        raise WebhookTargetRefused(exc.message, loc) from None


@router.post("", status_code=201, response_model=schemas.WebhookCreated, summary="Register a webhook endpoint")
async def create_webhook(body: schemas.WebhookIn, rt: RuntimeDep, caller: deps.Admin) -> Response:
    await check_target(rt, body.url, ("body", "url"))
    secret = "whsec_" + secrets.token_urlsafe(32)
    row = await rt.repo.create_webhook(
        {
            "id": uuid7(),
            "tenant_id": caller.tenant,
            "url": body.url,
            "secret": secret,
            "events": sorted(set(body.events)),
            "description": body.description,
            "active": True,
        }
    )
    await rt.repo.record_audit(caller.audit("webhook.created", str(row["id"]), {"url": body.url}))
    return deps.json_response({**webhook_view(row), "secret": secret}, status_code=201)


@router.get("", response_model=schemas.WebhookList, summary="The tenant's webhook endpoints (without secrets)")
async def list_webhooks(rt: RuntimeDep, caller: deps.Admin) -> Response:
    return deps.json_response({"items": [webhook_view(w) for w in await rt.repo.list_webhooks(caller.tenant)]})


@router.get("/deliveries", response_model=schemas.DeliveryPage, summary="The delivery log, newest first")
async def list_deliveries(
    rt: RuntimeDep,
    caller: deps.Reader,
    status: schemas.DeliveryStatusName | None = None,
    webhook_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: UUID | None = None,
) -> Response:
    rows = await rt.repo.list_deliveries(
        caller.tenant, status=status, webhook_id=webhook_id, before=cursor, limit=limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    return deps.json_response(
        {"items": [delivery_view(r) for r in page], "next_cursor": page[-1]["id"] if more and page else None}
    )


@router.get("/{webhook_id:uuid}", response_model=schemas.WebhookOut, responses=_NOT_FOUND, summary="One webhook")
async def get_webhook(webhook_id: UUID, rt: RuntimeDep, caller: deps.Admin) -> Response:
    return deps.json_response(webhook_view(await rt.repo.get_webhook(caller.tenant, webhook_id)))


@router.patch(
    "/{webhook_id:uuid}", response_model=schemas.WebhookOut, responses=_NOT_FOUND, summary="Enable or disable"
)
async def update_webhook(webhook_id: UUID, body: schemas.WebhookPatch, rt: RuntimeDep, caller: deps.Admin) -> Response:
    row = await rt.repo.set_webhook_active(caller.tenant, webhook_id, body.active)
    what = "webhook.enabled" if body.active else "webhook.disabled"
    await rt.repo.record_audit(caller.audit(what, str(webhook_id)))
    return deps.json_response(webhook_view(row))


@router.delete("/{webhook_id:uuid}", status_code=204, responses=_NOT_FOUND, summary="Delete a webhook endpoint")
async def delete_webhook(webhook_id: UUID, rt: RuntimeDep, caller: deps.Admin) -> Response:
    await rt.repo.delete_webhook(caller.tenant, webhook_id)
    await rt.repo.record_audit(caller.audit("webhook.deleted", str(webhook_id)))
    return Response(status_code=204)
