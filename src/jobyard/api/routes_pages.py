"""The dashboard's pages, server-rendered with Jinja2 on the same dependencies (and tenant) as the API.

Pages render the current state; ``web/static/app.js`` keeps them live over the streams and the JSON API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from jobyard import jsonutil
from jobyard.api import deps
from jobyard.api.views import action_view, delivery_view, job_view, schedule_view, webhook_view
from jobyard.auth import Principal
from jobyard.live.sampler import QueueSampler
from jobyard.model import JobStatus
from jobyard.runtime import Runtime
from jobyard.sdk import Yard

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_DIR = WEB_DIR / "static"
templates = Jinja2Templates(directory=WEB_DIR / "templates")

router = APIRouter(include_in_schema=False)

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]
YardDep = Annotated[Yard, Depends(deps.yard)]


# Pages need the jobs:read scope; a caller without credentials is sent to the sign-in page (see api/app.py).
async def _tenant(caller: deps.Reader) -> str:
    return caller.tenant


TenantDep = Annotated[str, Depends(_tenant)]
STATUSES = [s.value for s in JobStatus]
PAGE_SIZE = 50


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    value = value.astimezone(UTC)
    today = datetime.now(UTC).date()
    return value.strftime("%H:%M:%S" if value.date() == today else "%Y-%m-%d %H:%M") + " UTC"


def _duration(job: dict[str, Any]) -> str:
    start, end = job.get("started_at"), job.get("finished_at")
    if start is None:
        return "—"
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


templates.env.filters["when"] = _when
templates.env.filters["duration"] = _duration


def _render(
    request: Request, name: str, page: str, initial: Any = None, status_code: int = 200, **context: Any
) -> Response:
    # JSON inside <script>: "</" would end the element early.
    embedded = jsonutil.dumps(initial).decode().replace("</", "<\\/")
    caller: Principal | None = getattr(request.state, "principal", None)
    session: dict[str, Any] = {}
    if caller is not None and caller.via == "session":
        session = {"session_csrf": caller.csrf_token, "signed_in_as": f"{caller.actor} · {caller.tenant}"}
    return templates.TemplateResponse(
        request, name, {"page": page, "initial": embedded, **session, **context}, status_code=status_code
    )


async def _jobs(rt: Runtime, tenant: str, status: str | None, q: str) -> list[dict[str, Any]]:
    query = q.strip()
    if query:
        try:
            job = await rt.repo.get_job(tenant, UUID(query))
        except ValueError:
            pass
        else:
            return [job_view(job)] if job is not None and status in (None, job.status.value) else []
    jobs = await rt.repo.list_jobs(tenant, status=status, before=None, limit=PAGE_SIZE, name=query or None)
    return [job_view(j) for j in jobs]


StatusQuery = Annotated[str | None, Query(pattern="^(pending|running|succeeded|failed|cancelled)?$")]


@router.get("/", response_class=HTMLResponse)
async def jobs_page(
    request: Request, rt: RuntimeDep, tenant: TenantDep, status: StatusQuery = None, q: str = ""
) -> Any:
    status = status or None
    counts = await rt.repo.count_jobs_by_status(tenant)
    jobs = await _jobs(rt, tenant, status, q)
    counts_all = {name: counts.get(name, 0) for name in STATUSES}
    return _render(
        request, "jobs.html", "jobs", {"status": status, "q": q}, jobs=jobs, counts=counts_all, statuses=STATUSES,
        status=status, q=q,
    )  # fmt: skip


@router.get("/_fragments/job-rows", response_class=HTMLResponse)
async def job_rows(request: Request, rt: RuntimeDep, tenant: TenantDep, status: StatusQuery = None, q: str = "") -> Any:
    """The jobs table's rows, re-rendered by the server when live events arrive (no markup duplicated in JS)."""
    jobs = await _jobs(rt, tenant, status or None, q)
    return templates.TemplateResponse(request, "job_rows.html", {"jobs": jobs, "q": q, "status": status})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, rt: RuntimeDep, tenant: TenantDep) -> Any:
    try:
        found = await rt.repo.get_job_with_actions(tenant, UUID(job_id))
    except ValueError:
        found = None
    if found is None:
        return _render(request, "not_found.html", "jobs", None, 404, message=f"There is no job {job_id}.")
    job, actions = found
    view = job_view(job)
    view["actions"] = [action_view(a) for a in actions]
    done = sum(1.0 if a.status.is_final else (a.progress or 0.0) for a in actions)
    percent = round(100.0 * done / len(actions), 1) if actions else 100.0
    return _render(request, "job.html", "job", view, job=view, percent=percent)


@router.get("/queues", response_class=HTMLResponse)
async def queues_page(request: Request, tenant: TenantDep) -> Any:
    sampler: QueueSampler = request.app.state.sampler
    return _render(request, "queues.html", "queues", None, every=sampler.every)


@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request, tenant: TenantDep) -> Any:
    return _render(request, "workers.html", "workers")


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(
    request: Request, rt: RuntimeDep, tenant: TenantDep, queue: str | None = None, type: str | None = None
) -> Any:
    rows = await rt.repo.list_dead_letters(tenant, queue=queue or None, type_=type or None, limit=200)
    items = [action_view(a) for a in rows]
    return _render(request, "dead_letters.html", "dead", None, items=items, queue=queue, type=type)


@router.get("/submit", response_class=HTMLResponse)
async def submit_page(request: Request, yard: YardDep, tenant: TenantDep) -> Any:
    types = [{"name": d.name, "queue": d.queue, "description": d.description} for d in yard.definitions]
    names = {t["name"] for t in types}
    has_olt = {"olt.ping", "olt.optical_power", "olt.firmware_check"} <= names
    return _render(request, "submit.html", "submit", {"types": types}, types=types, has_olt=has_olt)


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(request: Request, rt: RuntimeDep, tenant: TenantDep) -> Any:
    schedules = [schedule_view(s) for s in await rt.repo.list_schedules(tenant)]
    return _render(request, "schedules.html", "schedules", None, schedules=schedules)


DeliveryStatusQuery = Annotated[str | None, Query(pattern="^(pending|delivered|failed)?$")]


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request, rt: RuntimeDep, tenant: TenantDep, status: DeliveryStatusQuery = None) -> Any:
    webhooks = [webhook_view(w) for w in await rt.repo.list_webhooks(tenant)]
    rows = await rt.repo.list_deliveries(tenant, status=status or None, limit=200)
    deliveries = [delivery_view(d) for d in rows]
    return _render(
        request, "webhooks.html", "webhooks", None, webhooks=webhooks, deliveries=deliveries, status=status or None
    )
