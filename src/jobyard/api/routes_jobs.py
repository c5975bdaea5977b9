"""Jobs, results and dead letters under ``/api``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Header, Query, Response

from jobyard import jsonutil
from jobyard.api import deps, schemas
from jobyard.api.views import action_view, job_view, status_view
from jobyard.auth import Principal
from jobyard.errors import NotFound, ValidationError
from jobyard.model import ActionRecord, ActionSpecIn, ActionStatus, JobRecord
from jobyard.runtime import Runtime
from jobyard.sdk import Yard
from jobyard.store.repository import DedupKey, NewJob
from jobyard.submission import build_action_specs

router = APIRouter(prefix="/api", tags=["jobs"])
log = logging.getLogger("jobyard.api")

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]
YardDep = Annotated[Yard, Depends(deps.yard)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorOut, "description": "no such job for this tenant"}
}


IDEMPOTENCY_TTL = 24 * 3600.0


def _request_hash(body: schemas.JobIn | schemas.JobBatchIn) -> str:
    """What makes two submissions the same request: their content, whatever the order of its keys."""
    canonical = body.model_dump(mode="json", exclude={"dedup_window"})
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _dedup_keys(body: schemas.JobIn, idempotency_key: str | None) -> list[DedupKey]:
    if idempotency_key is None and not body.dedup_window:
        return []  # most submissions: no request hash to compute
    request_hash = _request_hash(body)
    dedup = []
    if idempotency_key is not None:
        dedup.append(DedupKey(f"idem:{idempotency_key}", request_hash, IDEMPOTENCY_TTL, must_match=True))
    if body.dedup_window:
        dedup.append(DedupKey(f"sum:{request_hash}", request_hash, body.dedup_window, must_match=False))
    return dedup


async def _check_webhook(rt: Runtime, url: str, loc: tuple[str | int, ...]) -> None:
    """A job's own webhook URL: needs the signing secret, and a target the server may call."""
    if rt.settings.webhook_secret is None:
        raise ValidationError(
            "per-job webhooks are signed with JOBYARD_WEBHOOK_SECRET, which is not set on this server", loc
        )
    from jobyard.api.routes_webhooks import check_target

    await check_target(rt, url, loc)


@router.post(
    "/jobs",
    status_code=202,
    response_model=schemas.JobAccepted,
    responses={
        200: {"model": schemas.JobAccepted, "description": "the same request was already accepted: that job"},
        409: {"model": schemas.ErrorOut, "description": "the Idempotency-Key was used for a different request"},
        422: {"description": "invalid submission; `detail[].loc` names the field at fault"},
    },
    summary="Submit a job of one or more actions",
)
async def submit_job(
    body: schemas.JobIn,
    rt: RuntimeDep,
    yard: YardDep,
    caller: deps.Writer,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="retry-safe submission: the same key returns the same job"),
    ] = None,
) -> Response:
    return await accept_job(rt, yard, caller, body, idempotency_key)


async def accept_job(
    rt: Runtime, yard: Yard, caller: Principal, body: schemas.JobIn, idempotency_key: str | None
) -> Response:
    """Store a submitted job (the route's work; also the API's fast path for it, ``jobyard.api.fastpath``)."""
    specs = build_action_specs(yard, rt.settings, body.actions)
    if body.webhook_url is not None:
        await _check_webhook(rt, body.webhook_url, ("body", "webhook_url"))
    await rt.quotas.admit_submission(caller.tenant, len(specs))
    mark = rt.cache.mark()
    job, action_ids = await rt.repo.create_job(
        tenant_id=caller.tenant,
        name=body.name,
        metadata=body.metadata,
        actions=specs,
        dedup=_dedup_keys(body, idempotency_key),
        webhook_url=body.webhook_url,
        audit=caller.audit("job.submitted", details={"actions": len(specs), "name": body.name}),
        handoff=rt.submission_handoff(),
    )
    created = bool(action_ids)
    if created:
        _prime_status(rt, caller.tenant, job, action_ids, specs, mark)
    return deps.json_response(
        {"id": job.id, "status": job.status.value, "status_url": f"/api/jobs/{job.id}/status"},
        status_code=202 if created else 200,
        headers={"Location": f"/api/jobs/{job.id}", **({} if created else {"Idempotent-Replayed": "true"})},
    )


@router.post(
    "/jobs:batch",
    status_code=202,
    response_model=schemas.JobBatchAccepted,
    responses={
        200: {"model": schemas.JobBatchAccepted, "description": "the same request was already accepted: those jobs"},
        409: {"model": schemas.ErrorOut, "description": "the Idempotency-Key was used for a different request"},
        422: {"description": "invalid submission; `detail[].loc` names the job and the field at fault"},
    },
    summary="Submit several jobs at once, stored together or not at all",
)
async def submit_jobs(
    body: schemas.JobBatchIn,
    rt: RuntimeDep,
    yard: YardDep,
    caller: deps.Writer,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="retry-safe submission: the same key returns the same jobs"),
    ] = None,
) -> Response:
    """Many jobs in one request: one round trip and one transaction for all of them.

    Each job is what ``POST /api/jobs`` takes and becomes the same job. The whole batch is checked first (a job at
    fault fails the request, naming it in ``loc``: ``["body", "jobs", 3, "actions", 0, "type"]``) and then stored
    in one transaction, so either every job is accepted or none is. With an ``Idempotency-Key`` the batch is
    retry-safe as a whole: the same key and body return the same jobs (200), the same key with another body is a
    409. A job's own ``dedup_window`` applies to that job alone.
    """
    limit = rt.settings.max_jobs_per_batch
    if len(body.jobs) > limit:
        raise ValidationError(
            f"a batch may have at most {limit} jobs (JOBYARD_MAX_JOBS_PER_BATCH); this one has {len(body.jobs)}: "
            "send it in several requests",
            ("body", "jobs"),
        )
    batch_hash = _request_hash(body) if idempotency_key is not None else None
    new: list[NewJob] = []
    for index, job in enumerate(body.jobs):
        at = ("body", "jobs", index)
        specs = build_action_specs(yard, rt.settings, job.actions, at)
        if job.webhook_url is not None:
            await _check_webhook(rt, job.webhook_url, (*at, "webhook_url"))
        dedup = _dedup_keys(job, None)
        if idempotency_key is not None and batch_hash is not None:
            # One key per job of the batch, each holding the whole request's hash: a retry finds every job again.
            key = f"idem:{idempotency_key}#{index}"
            dedup.append(DedupKey(key, batch_hash, IDEMPOTENCY_TTL, must_match=True, shown=repr(idempotency_key)))
        details = {"actions": len(specs), "name": job.name, "batch": len(body.jobs)}
        audit = caller.audit("job.submitted", details=details)
        new.append(NewJob(job.name, job.metadata, specs, dedup, job.webhook_url, audit))
    await rt.quotas.admit_submission(caller.tenant, sum(len(job.actions) for job in new), jobs=len(new))
    mark = rt.cache.mark()
    stored = await rt.repo.create_jobs(tenant_id=caller.tenant, jobs=new, handoff=rt.submission_handoff())
    created = any(action_ids for _, action_ids in stored)
    for (job_record, action_ids), submitted in zip(stored, new, strict=True):
        if action_ids:
            _prime_status(rt, caller.tenant, job_record, action_ids, submitted.actions, mark)
    accepted = [
        {"id": job.id, "status": job.status.value, "status_url": f"/api/jobs/{job.id}/status"} for job, _ in stored
    ]
    return deps.json_response(
        {"jobs": accepted},
        status_code=202 if created else 200,
        headers={} if created else {"Idempotent-Replayed": "true"},
    )


@router.get("/jobs", response_model=schemas.JobPage, summary="List jobs, newest first")
async def list_jobs(
    rt: RuntimeDep,
    caller: deps.Reader,
    status: schemas.JobStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: UUID | None = None,
    q: Annotated[str | None, Query(max_length=200, description="a job id, or text its name contains")] = None,
) -> Response:
    tenant = caller.tenant
    query = (q or "").strip()
    if query:
        try:
            by_id = await rt.repo.get_job(tenant, UUID(query))
        except ValueError:
            pass
        else:
            matches = [by_id] if by_id is not None and status in (None, by_id.status.value) else []
            return deps.json_response({"items": [job_view(j) for j in matches], "next_cursor": None})
    jobs = await rt.repo.list_jobs(tenant, status=status, before=cursor, limit=limit + 1, name=query or None)
    page, more = jobs[:limit], len(jobs) > limit
    return deps.json_response(
        {"items": [job_view(j) for j in page], "next_cursor": page[-1].id if more and page else None}
    )


@router.get(
    "/jobs/{job_id}",
    response_model=schemas.JobDetailOut,
    responses=_NOT_FOUND,
    summary="A job and its actions",
)
async def get_job(job_id: UUID, rt: RuntimeDep, caller: deps.Reader) -> Response:
    tenant = caller.tenant

    async def compute() -> bytes:
        found = await rt.repo.get_job_with_actions(tenant, job_id)
        if found is None:
            raise NotFound(f"job {job_id} not found")
        job, actions = found
        view = job_view(job)
        view["actions"] = [action_view(a) for a in actions]
        return jsonutil.dumps(view)

    return Response(await _cached(rt, job_id, f"job:{tenant}:{job_id}", compute), media_type="application/json")


def _prime_status(
    rt: Runtime, tenant: str, job: JobRecord, action_ids: list[UUID], specs: Sequence[ActionSpecIn], mark: int
) -> None:
    """Keep a job this process has just stored as its own copy of the job's status: its first read needs no store.

    The status is built from what was written (every action queued, as the insert sets them), the same view a read
    would make. ``mark`` (``Cache.mark``) was taken before the insert: if the job has changed since (a worker's
    claim announced), nothing is kept. Only where the process keeps local copies at all.
    """
    if not rt.cache.keeps_local_copies:  # (off with JOBYARD_CACHE_TTL=0 too: it is the copies' TTL)
        return
    try:
        _prime(rt, tenant, job, action_ids, specs, mark)
    except Exception:  # the job is stored: a failure here must not turn its acceptance into an error (and a retry)
        log.exception(
            "keeping job %s's first status as this process's copy failed; its first read goes to the store", job.id
        )


def _prime(
    rt: Runtime, tenant: str, job: JobRecord, action_ids: list[UUID], specs: Sequence[ActionSpecIn], mark: int
) -> None:
    # Rendered on the copy's first read, if any (most new jobs are not read while it lasts): only what the view
    # needs is kept for it, not the job's metadata nor the actions' payloads.
    job = dataclasses.replace(job, metadata={})
    shapes = [(spec.type, spec.queue, spec.max_attempts, spec.timeout) for spec in specs]

    def render() -> bytes:
        actions = [
            ActionRecord(
                id=action_id,
                job_id=job.id,
                seq=seq,
                type=type_,
                queue=queue,
                status=ActionStatus.QUEUED,
                attempt=0,
                max_attempts=max_attempts,
                timeout=timeout,
                progress=0.0,
                progress_message=None,
                result=None,
                error=None,
                created_at=job.created_at,
                started_at=None,
                finished_at=None,
            )
            for seq, (action_id, (type_, queue, max_attempts, timeout)) in enumerate(
                zip(action_ids, shapes, strict=True)
            )
        ]
        return jsonutil.dumps(status_view(job, actions))

    # Its length once rendered, about (a job of ten "demo.noop" actions: 2,180 bytes), for the copies' bound
    size = 192 + sum(190 + len(type_) for type_, *_ in shapes)
    rt.cache.prime(str(job.id), f"status:{tenant}:{job.id}", render, mark, size=size)


async def _cached(rt: Runtime, job_id: UUID, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
    """Cache-aside read of one job's view; every status event of the job invalidates it."""
    if rt.settings.cache_ttl <= 0:
        return await compute()
    return await rt.cache.get_or_set(str(job_id), key, compute, rt.settings.cache_ttl)


@router.get(
    "/jobs/{job_id}/status",
    response_model=schemas.JobStatusOut,
    responses=_NOT_FOUND,
    summary="A job's consolidated status, progress and per-action state",
)
async def get_job_status(job_id: UUID, rt: RuntimeDep, caller: deps.Reader) -> Response:
    return Response(await status_body(rt, caller.tenant, job_id), media_type="application/json")


async def status_body(rt: Runtime, tenant: str, job_id: UUID) -> bytes:
    """The JSON of a job's status (cache-aside); ``NotFound`` when the tenant has no such job.

    Shared by the route and the API's fast path for it (``jobyard.api.fastpath``)."""

    async def compute() -> bytes:
        found = await rt.repo.get_job_with_actions(tenant, job_id)
        if found is None:
            raise NotFound(f"job {job_id} not found")
        return jsonutil.dumps(status_view(*found))

    return await _cached(rt, job_id, f"status:{tenant}:{job_id}", compute)


@router.get(
    "/results/{action_id}",
    response_model=schemas.ResultOut,
    responses=_NOT_FOUND,
    summary="An action's result: the full value from Redis, else the store's summary",
)
async def get_result(action_id: UUID, rt: RuntimeDep, caller: deps.Reader) -> Response:
    action = await rt.repo.get_action(caller.tenant, action_id)
    if action is None:
        raise NotFound(f"action {action_id} not found")
    found, value = await rt.results.get(action_id) if action.status.value == "succeeded" else (False, None)
    return deps.json_response(
        {
            "action_id": action.id,
            "status": action.status.value,
            "source": "cache" if found else "store",
            "result": value if found else action.result,
            "error": action.error,
        }
    )


@router.get("/dead-letters", response_model=schemas.DeadLetterPage, summary="Actions that failed for good")
async def list_dead_letters(
    rt: RuntimeDep,
    caller: deps.Reader,
    queue: str | None = None,
    type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: UUID | None = None,
) -> Response:
    rows = await rt.repo.list_dead_letters(caller.tenant, queue=queue, type_=type, before=cursor, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return deps.json_response(
        {"items": [action_view(a) for a in page], "next_cursor": page[-1].id if more and page else None}
    )


@router.get("/action-types", response_model=list[schemas.ActionTypeOut], summary="Registered action types")
async def list_action_types(rt: RuntimeDep, yard: YardDep, caller: deps.Reader) -> Response:
    return deps.json_response(
        [
            {
                "name": d.name,
                "queue": d.queue,
                "max_attempts": d.max_attempts or rt.settings.default_max_attempts,
                "timeout": d.timeout or rt.settings.default_timeout,
                "description": d.description,
            }
            for d in yard.definitions
        ]
    )


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=schemas.CancelOut,
    responses={**_NOT_FOUND, 409: {"model": schemas.ErrorOut, "description": "the job is already final"}},
    summary="Cancel a job: waiting actions at once, running ones are asked to stop",
)
async def cancel_job(job_id: UUID, rt: RuntimeDep, caller: deps.Writer) -> Response:
    result = await rt.repo.cancel_job(caller.tenant, job_id, audit=caller.audit("job.cancelled"))
    if result.running_action_ids:
        await rt.events.control({"type": "cancel", "action_ids": [str(i) for i in result.running_action_ids]})
    await rt.events.publish(
        [{"type": "job.cancelled", "job_id": str(job_id), "cancelled": len(result.cancelled_action_ids)}]
    )
    return deps.json_response(
        {
            "id": job_id,
            "status": "cancelled",
            "cancelled_actions": len(result.cancelled_action_ids),
            "stopping_actions": len(result.running_action_ids),
        }
    )


async def _requeue(rt: Runtime, caller: Principal, action_id: UUID, extra_attempts: int, what: str) -> Response:
    audit = caller.audit(what, details={"extra_attempts": extra_attempts})
    action = await rt.repo.requeue_failed(caller.tenant, action_id, extra_attempts=extra_attempts, audit=audit)
    await rt.events.publish(
        [{"type": "action.status", "job_id": str(action.job_id), "action_id": str(action.id), "status": "queued"}]
    )
    return deps.json_response(
        {"id": action.id, "job_id": action.job_id, "status": "queued", "max_attempts": action.max_attempts},
        status_code=202,
    )


_REQUEUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorOut, "description": "no such action for this tenant"},
    409: {"model": schemas.ErrorOut, "description": "the action is not failed, or its job was cancelled"},
}


@router.post(
    "/actions/{action_id}/retry",
    status_code=202,
    response_model=schemas.RequeuedOut,
    responses=_REQUEUE_RESPONSES,
    summary="Run a failed action once more",
)
async def retry_action(action_id: UUID, rt: RuntimeDep, caller: deps.Writer) -> Response:
    return await _requeue(rt, caller, action_id, 1, "action.retried")


@router.post(
    "/dead-letters/{action_id}/replay",
    status_code=202,
    response_model=schemas.RequeuedOut,
    responses=_REQUEUE_RESPONSES,
    summary="Replay a dead letter with a fresh attempt budget",
)
async def replay_dead_letter(
    action_id: UUID, rt: RuntimeDep, yard: YardDep, caller: deps.Writer, body: schemas.ReplayIn | None = None
) -> Response:
    budget = body.max_attempts if body is not None and body.max_attempts else None
    if budget is None:
        action = await rt.repo.get_action(caller.tenant, action_id)
        if action is None:
            raise NotFound(f"action {action_id} not found")
        definition = yard.get(action.type) if action.type in yard else None
        budget = (definition.max_attempts if definition else None) or rt.settings.default_max_attempts
    return await _requeue(rt, caller, action_id, budget, "action.replayed")
