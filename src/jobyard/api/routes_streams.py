"""Live status streams: Server-Sent Events and WebSocket, per job and per tenant, over the process's event hub.

SSE resumes with ``Last-Event-ID`` (browsers send it on reconnect); WebSocket with ``?last_event_id=``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from jobyard.api import deps, schemas
from jobyard.api.feed import FeedItem, JobFeed, TenantFeed
from jobyard.auth import JOBS_READ
from jobyard.errors import Forbidden, NotFound, Unauthenticated
from jobyard.live.hub import EventHub
from jobyard.runtime import Runtime

router = APIRouter(prefix="/api", tags=["live"])

RuntimeDep = Annotated[Runtime, Depends(deps.runtime)]

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}
RECONNECT_MS = 2000


def hub_of(request: Request) -> EventHub:
    hub: EventHub = request.app.state.hub
    return hub


def _sse(item: FeedItem) -> bytes:
    if item.live is not None:
        return item.live.sse
    if item.event == "heartbeat":
        return b": heartbeat\n\n"
    head = b"id: %s\n" % item.id.encode() if item.id else b""
    return head + b"event: %s\ndata: %s\n\n" % (item.event.encode(), item.body)


def _ws(item: FeedItem) -> str:
    if item.live is not None:
        return item.live.ws.decode()
    ident = f'"{item.id}"' if item.id else "null"
    return f'{{"id":{ident},"event":"{item.event}","data":{item.body.decode()}}}'


async def _sse_body(items: AsyncIterator[FeedItem]) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % RECONNECT_MS
    async for item in items:
        yield _sse(item)


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "an event stream (see the README's event list)"},
    404: {"model": schemas.ErrorOut, "description": "no such job for this tenant"},
}


@router.get(
    "/jobs/{job_id}/events",
    responses=_STREAM_DOC,
    response_class=StreamingResponse,
    summary="Follow a job live (SSE): a snapshot, every action change and progress update, then job.final",
)
async def job_events(
    job_id: UUID,
    request: Request,
    rt: RuntimeDep,
    caller: deps.Reader,
    last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
) -> StreamingResponse:
    feed = JobFeed(rt.repo, hub_of(request), caller.tenant, job_id, rt.settings.stream_heartbeat)
    await feed.open()
    return StreamingResponse(_sse_body(feed.items(last_event_id)), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/events",
    responses={200: _STREAM_DOC[200]},
    response_class=StreamingResponse,
    summary="Every status event of the caller's tenant (SSE), for dashboards",
)
async def tenant_events(request: Request, rt: RuntimeDep, caller: deps.Reader) -> StreamingResponse:
    feed = TenantFeed(hub_of(request), caller.tenant, rt.settings.stream_heartbeat)
    return StreamingResponse(_sse_body(feed.items()), media_type="text/event-stream", headers=SSE_HEADERS)


async def _pump(websocket: WebSocket, items: AsyncIterator[FeedItem]) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        async for item in items:
            await websocket.send_text(_ws(item))
        await websocket.close(code=1000)


_READ = deps.require(JOBS_READ)


async def _ws_tenant(websocket: WebSocket) -> str | None:
    """The caller's tenant if it may read jobs; else the handshake is refused (4401 or 4403) and None returned."""
    try:
        await _READ(websocket)
        return await deps.tenant(websocket)
    except Unauthenticated as exc:
        await websocket.close(code=4401, reason=str(exc)[:120])
    except Forbidden as exc:
        await websocket.close(code=4403, reason=str(exc)[:120])
    return None


@router.websocket("/jobs/{job_id}/ws")
async def job_ws(
    websocket: WebSocket,
    job_id: UUID,
    last_event_id: Annotated[str | None, Query(description="resume after this event id")] = None,
) -> None:
    """The job stream over WebSocket: the same messages as SSE, each ``{"id", "event", "data"}``."""
    rt: Runtime = websocket.app.state.runtime
    tenant = await _ws_tenant(websocket)
    if tenant is None:
        return
    feed = JobFeed(rt.repo, websocket.app.state.hub, tenant, job_id, rt.settings.stream_heartbeat)
    try:
        await feed.open()
    except NotFound:
        await websocket.close(code=4404, reason=f"job {job_id} not found")
        return
    await websocket.accept()
    items = feed.items(last_event_id)
    try:
        await _pump(websocket, items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
        feed.close()


@router.websocket("/ws")
async def tenant_ws(websocket: WebSocket) -> None:
    """Every status event of the caller's tenant over WebSocket."""
    rt: Runtime = websocket.app.state.runtime
    tenant = await _ws_tenant(websocket)
    if tenant is None:
        return
    feed = TenantFeed(websocket.app.state.hub, tenant, rt.settings.stream_heartbeat)
    await websocket.accept()
    items = feed.items()
    try:
        await _pump(websocket, items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
        feed.close()
