"""Schedules under ``/api/schedules``: cron or interval job templates of the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response

from jobyard.api import deps, schemas
from jobyard.api.views import schedule_view
from jobyard.errors import NotFound, ValidationError
from jobyard.ids import uuid7
from jobyard.runtime import Runtime
from jobyard.schedules import ScheduleRecord, Timing, check_cron, check_timezone, parse_every
from jobyard.sdk import Yard
from jobyard.submission import build_action_specs

router = APIRouter(prefix="/api/schedules", tags=["schedules"])

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]
YardDep = Annotated[Yard, Depends(deps.yard)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorOut, "description": "no such schedule"}}


def _checked_timing(body: schemas.ScheduleIn, now: datetime) -> Timing:
    """The schedule's timing, with any error naming its field under ``body``."""
    try:
        timezone = check_timezone(body.timezone)
        if body.cron is not None:
            return Timing(check_cron(body.cron), None, timezone, now)
        assert body.every is not None
        return Timing(None, parse_every(body.every), timezone, now)
    except ValidationError as exc:
        raise ValidationError(exc.message, ("body", *exc.loc)) from None


@router.post("", status_code=201, response_model=schemas.ScheduleOut, summary="Create a schedule")
async def create_schedule(body: schemas.ScheduleIn, rt: RuntimeDep, yard: YardDep, caller: deps.Writer) -> Response:
    try:
        build_action_specs(yard, rt.settings, body.job.actions)
    except ValidationError as exc:
        raise ValidationError(exc.message, ("body", "job", *exc.loc[1:])) from None
    now = datetime.now(UTC)
    timing = _checked_timing(body, now)
    schedule = await rt.repo.create_schedule(
        {
            "id": uuid7(),
            "tenant_id": caller.tenant,
            "name": body.name,
            "cron": timing.cron,
            "interval_seconds": timing.interval,
            "timezone": timing.timezone,
            "job": body.job.model_dump(mode="json", exclude_none=True),
            "missed": body.missed,
            "paused": body.paused,
            "next_fire_at": timing.next_after(now),
            "created_at": now,
            "updated_at": now,
        }
    )
    await rt.repo.record_audit(caller.audit("schedule.created", str(schedule.id), {"name": body.name}))
    return deps.json_response(
        schedule_view(schedule), status_code=201, headers={"Location": f"/api/schedules/{schedule.id}"}
    )


@router.get("", response_model=schemas.ScheduleList, summary="The tenant's schedules")
async def list_schedules(rt: RuntimeDep, caller: deps.Reader) -> Response:
    return deps.json_response({"items": [schedule_view(s) for s in await rt.repo.list_schedules(caller.tenant)]})


async def _schedule(rt: Runtime, tenant: str, schedule_id: UUID) -> ScheduleRecord:
    schedule = await rt.repo.get_schedule(tenant, schedule_id)
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return schedule


@router.get(
    "/{schedule_id}",
    response_model=schemas.ScheduleDetailOut,
    responses=_NOT_FOUND,
    summary="A schedule and its latest fires",
)
async def get_schedule(schedule_id: UUID, rt: RuntimeDep, caller: deps.Reader) -> Response:
    schedule = await _schedule(rt, caller.tenant, schedule_id)
    view = schedule_view(schedule)
    view["fires"] = await rt.repo.schedule_fires(schedule.id)
    return deps.json_response(view)


@router.post("/{schedule_id}/pause", response_model=schemas.ScheduleOut, responses=_NOT_FOUND, summary="Pause")
async def pause_schedule(schedule_id: UUID, rt: RuntimeDep, caller: deps.Writer) -> Response:
    schedule = await _schedule(rt, caller.tenant, schedule_id)
    paused = await rt.repo.set_schedule_paused(caller.tenant, schedule_id, True, schedule.next_fire_at)
    await rt.repo.record_audit(caller.audit("schedule.paused", str(schedule_id)))
    return deps.json_response(schedule_view(paused))


@router.post(
    "/{schedule_id}/resume",
    response_model=schemas.ScheduleOut,
    responses=_NOT_FOUND,
    summary="Resume: the next fire time is computed from now (runs missed while paused are not made up)",
)
async def resume_schedule(schedule_id: UUID, rt: RuntimeDep, caller: deps.Writer) -> Response:
    schedule = await _schedule(rt, caller.tenant, schedule_id)
    resumed = await rt.repo.set_schedule_paused(
        caller.tenant, schedule_id, False, schedule.timing.next_after(datetime.now(UTC))
    )
    await rt.repo.record_audit(caller.audit("schedule.resumed", str(schedule_id)))
    return deps.json_response(schedule_view(resumed))


@router.delete("/{schedule_id}", status_code=204, responses=_NOT_FOUND, summary="Delete a schedule")
async def delete_schedule(schedule_id: UUID, rt: RuntimeDep, caller: deps.Writer) -> Response:
    await rt.repo.delete_schedule(caller.tenant, schedule_id)
    await rt.repo.record_audit(caller.audit("schedule.deleted", str(schedule_id)))
    return Response(status_code=204)
