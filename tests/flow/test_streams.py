"""Live streams end to end: SSE and WebSocket per job, the tenant stream, resumption, heartbeats, slow clients."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import websockets

from jobyard.api.feed import FeedItem, JobFeed
from jobyard.sdk import ActionContext, Yard
from tests.harness import Stack, stack
from tests.liveclient import SseEvent, serve, sse_events

GATES: dict[str, asyncio.Event] = {}
yard = Yard("live-test")


@yard.action("live.step", max_attempts=1)
async def step(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Wait for the test's gate, report half-way, then finish."""
    await GATES[payload["gate"]].wait()
    ctx.progress(0.5, "half way")
    await asyncio.sleep(0.4)  # long enough for the worker's progress loop to publish the update
    return {"n": payload.get("n")}


@asynccontextmanager
async def live_stack(make_settings: Callable[..., Any], **overrides: Any) -> AsyncIterator[tuple[Stack, str]]:
    async with stack(make_settings(**overrides), yard) as s, serve(s.app) as url:
        assert await s.app.state.hub.wait_healthy(10)
        yield s, url


def gated_job(count: int) -> tuple[str, list[dict[str, Any]]]:
    gate = uuid.uuid4().hex
    GATES[gate] = asyncio.Event()
    return gate, [{"type": "live.step", "payload": {"gate": gate, "n": i}} for i in range(count)]


async def wait_for_clients(s: Stack, count: int) -> None:
    hub = s.app.state.hub
    deadline = time.monotonic() + 20
    while hub.client_count < count:
        assert time.monotonic() < deadline, f"only {hub.client_count} of {count} stream clients connected"
        await asyncio.sleep(0.02)


async def read_sse(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    on_first: Callable[[], None] | None = None,
) -> list[SseEvent]:
    """Every event of a job stream until the server ends it; ``on_first`` is called when the first one arrives."""
    events: list[SseEvent] = []
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for item in sse_events(response):
            if isinstance(item, SseEvent):
                events.append(item)
                if on_first is not None and len(events) == 1:
                    on_first()
    return events


async def test_sse_stream_sends_snapshot_every_change_and_progress_then_final(make_settings: Any) -> None:
    async with live_stack(make_settings) as (s, url), httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate, actions = gated_job(3)
        job_id = await s.submit(actions)
        reader = asyncio.create_task(read_sse(http, f"/api/jobs/{job_id}/events"))
        await wait_for_clients(s, 1)
        GATES[gate].set()
        events = await asyncio.wait_for(reader, 30)
    assert events[0].event == "snapshot" and events[0].data["complete"] is True
    assert events[-1].event == "job.final" and events[-1].data["status"] == "succeeded"
    action_ids = {a["id"] for a in events[0].data["actions"]}
    succeeded = {e.data["action_id"] for e in events if e.event == "action.status" and e.data["status"] == "succeeded"}
    progressed = {e.data["action_id"] for e in events if e.event == "action.progress"}
    assert succeeded == action_ids and progressed == action_ids


async def test_a_stream_whose_final_read_fails_reads_again_and_still_ends_final(
    make_settings: Any, monkeypatch: Any
) -> None:
    from jobyard.errors import StoreUnavailable

    async with live_stack(make_settings) as (s, url), httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate, actions = gated_job(2)
        job_id = await s.submit(actions)
        reader = asyncio.create_task(read_sse(http, f"/api/jobs/{job_id}/events"))
        await wait_for_clients(s, 1)
        real = s.runtime.repo.get_job_with_actions
        failed: list[float] = []

        async def busy_for_a_moment(tenant: str, job: Any) -> Any:
            found = await real(tenant, job)
            busy = not failed or time.monotonic() - failed[0] < 0.5
            if found is not None and found[0].status.is_final and busy:
                # every read that would end the stream, for half a second: the store is busy
                failed.append(time.monotonic())
                raise StoreUnavailable("too many connections (simulated)")
            return found

        monkeypatch.setattr(s.runtime.repo, "get_job_with_actions", busy_for_a_moment)
        GATES[gate].set()
        events = await asyncio.wait_for(reader, 20)
    assert failed
    assert events[-1].event == "job.final" and events[-1].data["status"] == "succeeded"


async def test_websocket_stream_carries_the_same_events_until_final(make_settings: Any) -> None:
    async with live_stack(make_settings) as (s, url):
        gate, actions = gated_job(2)
        job_id = await s.submit(actions)
        received: list[dict[str, Any]] = []
        async with websockets.connect(url.replace("http", "ws") + f"/api/jobs/{job_id}/ws") as ws:
            received.append(json.loads(await ws.recv()))
            GATES[gate].set()
            async for raw in ws:
                received.append(json.loads(raw))
    assert received[0]["event"] == "snapshot"
    assert received[-1]["event"] == "job.final" and received[-1]["data"]["status"] == "succeeded"
    assert sum(1 for m in received if m["event"] == "action.status" and m["data"]["status"] == "succeeded") == 2


async def test_stream_of_an_unknown_job_is_a_404(make_settings: Any) -> None:
    async with live_stack(make_settings) as (_s, url), httpx.AsyncClient(base_url=url) as http:
        response = await http.get(f"/api/jobs/{uuid.uuid4()}/events")
    assert response.status_code == 404


async def test_last_event_id_replays_what_changed_since_from_the_store(make_settings: Any) -> None:
    async with live_stack(make_settings) as (s, url), httpx.AsyncClient(base_url=url, timeout=30) as http:
        before = str(int(time.time() * 1_000_000))
        gate, actions = gated_job(2)
        GATES[gate].set()
        job_id = await s.submit(actions)
        await s.wait(job_id)
        events = await read_sse(http, f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": before})
    assert events[0].event == "snapshot" and events[0].data["complete"] is False
    assert {a["status"] for a in events[0].data["actions"]} == {"succeeded"} and len(events[0].data["actions"]) == 2
    assert events[-1].event == "job.final"


async def test_an_idle_stream_gets_heartbeats(make_settings: Any) -> None:
    async with (
        live_stack(make_settings, stream_heartbeat=0.2) as (s, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        gate, actions = gated_job(1)
        job_id = await s.submit(actions)
        async with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
            async for item in sse_events(response):
                if isinstance(item, str):
                    heartbeat = item
                    break
        GATES[gate].set()
    assert heartbeat == ": heartbeat"


async def test_many_clients_of_one_job_each_receive_every_event(make_settings: Any) -> None:
    clients = 40
    async with (
        live_stack(make_settings) as (s, url),
        httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients + 5)) as http,
    ):
        gate, actions = gated_job(3)
        job_id = await s.submit(actions)
        snapshots: list[int] = []
        readers = [
            asyncio.create_task(read_sse(http, f"/api/jobs/{job_id}/events", on_first=lambda: snapshots.append(1)))
            for _ in range(clients)
        ]
        # Every client has its snapshot before the job moves: a client whose snapshot were read only after the job
        # finished (40 store reads at once, on a slow machine) would rightly get the final snapshot instead of the
        # events.
        await wait_for_clients(s, clients)
        async with asyncio.timeout(30):
            while len(snapshots) < clients:  # noqa: ASYNC110 - a list, polled
                await asyncio.sleep(0.02)
        GATES[gate].set()
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    finals = [r[-1].event for r in results]
    succeeded = [sum(1 for e in r if e.event == "action.status" and e.data["status"] == "succeeded") for r in results]
    assert finals == ["job.final"] * clients and succeeded == [3] * clients


async def test_tenant_stream_carries_events_of_the_tenants_jobs(make_settings: Any) -> None:
    async with live_stack(make_settings) as (s, url), httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate, actions = gated_job(2)
        seen: set[str] = set()
        async with http.stream("GET", "/api/events") as response:
            await wait_for_clients(s, 1)
            job_id = await s.submit(actions)
            GATES[gate].set()
            async for item in sse_events(response):
                if isinstance(item, SseEvent) and item.event == "action.status" and item.data["job_id"] == job_id:
                    if item.data["status"] == "succeeded":
                        seen.add(item.data["action_id"])
                    if len(seen) == 2:
                        break
    assert len(seen) == 2


async def test_stream_reads_the_store_while_the_event_subscription_is_down(make_settings: Any) -> None:
    async with live_stack(make_settings) as (s, url), httpx.AsyncClient(base_url=url, timeout=30) as http:
        await s.app.state.hub.stop()  # no events reach this process any more
        gate, actions = gated_job(2)
        job_id = await s.submit(actions)
        reader = asyncio.create_task(read_sse(http, f"/api/jobs/{job_id}/events"))
        await wait_for_clients(s, 1)
        GATES[gate].set()
        events = await asyncio.wait_for(reader, 30)
    assert events[-1].event == "job.final" and events[-1].data["status"] == "succeeded"


async def test_a_client_that_falls_behind_is_resynced_from_the_store(make_settings: Any) -> None:
    async with live_stack(make_settings, stream_buffer=1) as (s, _url):
        gate, actions = gated_job(3)
        job_id = await s.submit(actions)
        feed = JobFeed(s.runtime.repo, s.app.state.hub, "default", uuid.UUID(job_id), heartbeat=15)
        await feed.open()
        items = feed.items()
        first = await anext(items)
        GATES[gate].set()
        await s.wait(job_id)  # the client reads nothing meanwhile: its one-event buffer overflows
        rest: list[FeedItem] = [item async for item in items]
    assert first.event == "snapshot"
    assert [i.event for i in rest].count("snapshot") == 1  # the resync
    assert rest[-1].event == "job.final"


async def test_tenant_stream_tells_clients_to_reload_while_events_are_unavailable(make_settings: Any) -> None:
    async with (
        live_stack(make_settings, stream_heartbeat=0.2) as (s, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await s.app.state.hub.stop()
        async with http.stream("GET", "/api/events") as response:
            async for item in sse_events(response):
                if isinstance(item, SseEvent) and item.event != "hello":
                    first = item
                    break
    assert first.event == "resync"
