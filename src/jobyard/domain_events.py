"""Domain events (``job.created``, ``job.ready``, ``job.completed``, ``action.failed``): their rows and wire format.

The store writes an event row in the transaction of the state change; the leading relay publishes the rows to the
``jobyard.events`` topic exchange (routing key = the type) with confirms and turns them into webhook deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from jobyard import jsonutil
from jobyard.ids import uuid7

JOB_CREATED = "job.created"
JOB_READY = "job.ready"
JOB_COMPLETED = "job.completed"
ACTION_FAILED = "action.failed"
EVENT_TYPES = (JOB_CREATED, JOB_READY, JOB_COMPLETED, ACTION_FAILED)


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    event_id: UUID
    type: str
    tenant_id: str
    job_id: UUID
    action_id: UUID | None
    data: dict[str, Any]
    created_at: datetime

    def encode(self) -> bytes:
        """The message body on the exchange, and the body POSTed to webhooks."""
        return jsonutil.dumps(
            {
                "id": str(self.event_id),
                "type": self.type,
                "tenant_id": self.tenant_id,
                "created_at": self.created_at.isoformat(),
                "data": self.data,
            }
        )


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A tenant's webhook endpoint subscribed to some event types."""

    id: UUID
    tenant_id: str
    url: str
    events: Sequence[str]


# The event data each type carries; the PostgreSQL hot path builds the same objects with jsonb_build_object.
def job_created(job_id: UUID, name: str | None, total: int) -> dict[str, Any]:
    return {"job_id": str(job_id), "name": name, "status": "pending", "total": total}


def job_ready(job_id: UUID, total: int) -> dict[str, Any]:
    return {"job_id": str(job_id), "total": total}


def job_completed(job_id: UUID, status: str, total: int, succeeded: int, failed: int, cancelled: int) -> dict[str, Any]:
    return {
        "job_id": str(job_id),
        "status": status,
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
    }


def action_failed(job_id: UUID, action_id: UUID, type_: str, error: str | None) -> dict[str, Any]:
    return {"job_id": str(job_id), "action_id": str(action_id), "type": type_, "error": error}


def event_values(
    type_: str, tenant_id: str, job_id: UUID, data: dict[str, Any], action_id: UUID | None = None
) -> dict[str, Any]:
    """Column values of one event row (the portable path; ``created_at`` is the database clock)."""
    return {
        "event_id": uuid7(),
        "type": type_,
        "tenant_id": tenant_id,
        "job_id": job_id,
        "action_id": action_id,
        "data": data,
    }


def plan_deliveries(
    rows: Sequence[EventRow], targets: Sequence[WebhookTarget], job_urls: Mapping[UUID, str]
) -> list[dict[str, Any]]:
    """The webhook deliveries these events make: every subscribed endpoint of the tenant, and a job's own URL."""
    by_tenant: dict[str, list[WebhookTarget]] = {}
    for target in targets:
        by_tenant.setdefault(target.tenant_id, []).append(target)
    planned: list[dict[str, Any]] = []
    for row in rows:
        body = row.encode()
        destinations: list[tuple[UUID | None, str]] = [
            (t.id, t.url) for t in by_tenant.get(row.tenant_id, []) if row.type in t.events
        ]
        if row.type == JOB_COMPLETED and row.job_id in job_urls:
            destinations.append((None, job_urls[row.job_id]))
        for webhook_id, url in destinations:
            planned.append(
                {
                    "id": uuid7(),
                    "tenant_id": row.tenant_id,
                    "webhook_id": webhook_id,
                    "event_id": row.event_id,
                    "event_type": row.type,
                    "job_id": row.job_id,
                    "url": url,
                    "body": body,
                    "status": "pending",
                    "attempts": 0,
                }
            )
    return planned
