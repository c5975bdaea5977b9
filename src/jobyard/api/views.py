"""Plain-dict views of records for JSON responses (encoded by orjson on the hot paths)."""

from __future__ import annotations

from typing import Any

from jobyard.model import ActionRecord, JobRecord, job_progress
from jobyard.schedules import ScheduleRecord


def job_view(job: JobRecord) -> dict[str, Any]:
    done = job.succeeded + job.failed + job.cancelled
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status.value,
        "metadata": job.metadata,
        "counters": {
            "total": job.total,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "cancelled": job.cancelled,
            "percent": round(100.0 * done / job.total, 1) if job.total else 100.0,
        },
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "status_url": f"/api/jobs/{job.id}/status",
    }


def action_status_view(action: ActionRecord) -> dict[str, Any]:
    return {
        "id": action.id,
        "type": action.type,
        "status": action.status.value,
        "attempts": action.attempt,
        "progress": action.progress,
        "progress_message": action.progress_message,
        "result": action.result,
        "error": action.error,
        "started_at": action.started_at,
        "finished_at": action.finished_at,
    }


def action_view(action: ActionRecord) -> dict[str, Any]:
    view = action_status_view(action)
    view.update(
        job_id=action.job_id,
        queue=action.queue,
        payload=action.payload,
        max_attempts=action.max_attempts,
        timeout=action.timeout,
        created_at=action.created_at,
    )
    return view


def status_view(job: JobRecord, actions: list[ActionRecord]) -> dict[str, Any]:
    progress = job_progress([(a.status.value, a.progress) for a in actions])
    return {
        "id": job.id,
        "status": job.status.value,
        "progress": progress.as_dict(),
        "actions": [action_status_view(a) for a in actions],
    }


def schedule_view(schedule: ScheduleRecord) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "every_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "description": schedule.describe(),
        "job": schedule.job,
        "missed": schedule.missed,
        "paused": schedule.paused,
        "next_fire_at": schedule.next_fire_at,
        "last_fired_at": schedule.last_fired_at,
        "last_job_id": schedule.last_job_id,
        "last_error": schedule.last_error,
        "created_at": schedule.created_at,
    }


def webhook_view(row: dict[str, Any]) -> dict[str, Any]:
    """A webhook endpoint without its secret (shown once, at creation)."""
    return {k: row[k] for k in ("id", "url", "events", "description", "active", "created_at")}


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in row.items() if k not in ("tenant_id", "body")}
    if row["status"] != "pending":
        view["next_attempt_at"] = None
    return view
