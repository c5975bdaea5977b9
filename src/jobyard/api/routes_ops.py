"""Operations views under ``/api``: job counts by status, queues with rates over time, live workers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from jobyard.api import deps
from jobyard.live.presence import WorkerDirectory
from jobyard.live.sampler import QueueSampler
from jobyard.model import JobStatus
from jobyard.runtime import Runtime

router = APIRouter(prefix="/api", tags=["operations"])

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]


def workers_of(request: Request) -> list[dict[str, Any]]:
    directory: WorkerDirectory = request.app.state.workers
    return directory.alive()


@router.get("/job-counts", summary="How many of the caller's jobs are in each status")
async def job_counts(rt: RuntimeDep, caller: deps.Reader) -> Response:
    counts = await rt.repo.count_jobs_by_status(caller.tenant)
    return deps.json_response({status.value: counts.get(status.value, 0) for status in JobStatus})


@router.get("/workers", summary="Workers heard from recently: queues, concurrency, running actions, processed")
async def list_workers(request: Request, caller: deps.Reader) -> Response:
    # Workers serve every tenant: the list shows action ids, never payloads or results.
    return deps.json_response({"workers": workers_of(request)})


@router.get("/queues", summary="Queues: depth, consumers, throughput, and samples over time for charts")
async def list_queues(
    request: Request,
    caller: deps.Reader,
    history: Annotated[int, Query(ge=0, le=450, description="samples to include (2 s apart)")] = 150,
) -> Response:
    sampler: QueueSampler = request.app.state.sampler
    if not sampler.history:
        await sampler.sample()
    last = sampler.history[-1]
    workers = workers_of(request)
    queues = []
    for name in sorted(last["depth"]):
        serving = [w for w in workers if name in w.get("queues", [])]
        queues.append(
            {
                "name": name,
                "depth": last["depth"][name],
                "consumers": len(serving),
                "concurrency": sum(int(w.get("concurrency", 0)) for w in serving),
                "running": sum(1 for w in serving for a in w.get("running", []) if a),
                "rate_per_s": sampler.rate(name),
            }
        )
    samples = list(sampler.history)[-history:] if history else []
    return deps.json_response({"queues": queues, "sample_every": sampler.every, "history": samples})
