"""``AsyncClient.submit`` coalesces concurrent calls into ``POST /api/jobs:batch`` requests, each call keeping its
own job and the answer its own request would have had."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from jobyard import AsyncClient
from jobyard.demo import yard
from jobyard.errors import ClientError
from tests.harness import stack


class Counting(httpx.AsyncBaseTransport):
    """The harness's app in-process, recording each request as (path, jobs in its body); ``fail`` paths raise."""

    def __init__(self, app: Any, fail: str | None = None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.fail = fail
        self.sent: list[tuple[str, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in ("/api/jobs", "/api/jobs:batch"):
            body = json.loads(request.content)
            self.sent.append((path, len(body["jobs"]) if "jobs" in body else 1))
            if path == self.fail:
                raise httpx.ConnectError("the connection was refused (a test's transport)")
        return await self.inner.handle_async_request(request)


def _client(transport: Counting, **options: Any) -> AsyncClient:
    return AsyncClient("http://jobyard.test", transport=transport, **options)


async def _names(s: Any, ids: list[str]) -> list[str]:
    return [(await s.http.get(f"/api/jobs/{job_id}")).json()["name"] for job_id in ids]


async def test_concurrent_submissions_share_requests_and_each_gets_its_own_job(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        transport = Counting(s.app)
        async with _client(transport, submit_in_flight=2, submit_batch_max=10) as client:
            ids = await asyncio.gather(
                *(client.submit([{"type": "demo.noop"}] * (1 + i % 3), name=f"job-{i}") for i in range(30))
            )
            finals = [await s.wait(job_id) for job_id in ids]
        names = await _names(s, ids)
    # The first two went out at once, alone; the other 28 waited for them and went in batches of at most 10.
    assert transport.sent == [
        ("/api/jobs", 1),
        ("/api/jobs", 1),
        ("/api/jobs:batch", 10),
        ("/api/jobs:batch", 10),
        ("/api/jobs:batch", 8),
    ]
    assert len(set(ids)) == 30 and names == [f"job-{i}" for i in range(30)]
    assert [final["progress"]["total"] for final in finals] == [1 + i % 3 for i in range(30)]
    assert {final["status"] for final in finals} == {"succeeded"}


async def test_a_lone_submission_goes_out_at_once_and_zero_in_flight_never_coalesces(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        alone, plain = Counting(s.app), Counting(s.app)
        async with _client(alone) as client:
            first = await client.submit([{"type": "demo.noop"}], name="first")
            second = await client.submit([{"type": "demo.noop"}], name="second")
        async with _client(plain, submit_in_flight=0) as client:
            many = await asyncio.gather(*(client.submit([{"type": "demo.noop"}], name=f"n{i}") for i in range(6)))
        names = await _names(s, [first, second, *many])
    assert alone.sent == [("/api/jobs", 1), ("/api/jobs", 1)]
    assert plain.sent == [("/api/jobs", 1)] * 6
    assert names == ["first", "second", *(f"n{i}" for i in range(6))]


async def test_a_job_at_fault_fails_its_own_call_alone(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        transport = Counting(s.app)
        async with _client(transport, submit_in_flight=1) as client:
            calls = [
                client.submit([{"type": "demo.noop"}], name=f"job-{i}")
                if i != 3
                else client.submit([{"type": "demo.noop"}, {"type": "no.such.type"}], name="bad")
                for i in range(6)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        good = [o for o in outcomes if isinstance(o, str)]
        names = await _names(s, good)
    error = outcomes[3]
    assert isinstance(error, ClientError) and error.status_code == 422
    # What a lone POST /api/jobs answers: the loc names the action in that job's own body.
    assert error.detail[0]["loc"] == ["body", "actions", 1, "type"]
    assert names == [f"job-{i}" for i in range(6) if i != 3]
    # The refused batch (nothing of it stored) went again one job a request.
    assert transport.sent == [("/api/jobs", 1), ("/api/jobs:batch", 5)] + [("/api/jobs", 1)] * 5


async def test_a_batch_larger_than_the_api_allows_is_sent_one_job_a_request(make_settings: Any) -> None:
    async with stack(make_settings(max_jobs_per_batch=2), yard) as s:
        transport = Counting(s.app)
        async with _client(transport, submit_in_flight=1) as client:
            ids = await asyncio.gather(*(client.submit([{"type": "demo.noop"}], name=f"j{i}") for i in range(4)))
        names = await _names(s, ids)
    assert names == ["j0", "j1", "j2", "j3"]
    assert transport.sent == [("/api/jobs", 1), ("/api/jobs:batch", 3)] + [("/api/jobs", 1)] * 3


async def test_an_unanswered_batch_fails_each_of_its_calls(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        transport = Counting(s.app, fail="/api/jobs:batch")
        async with _client(transport, submit_in_flight=1) as client:
            outcomes = await asyncio.gather(
                *(client.submit([{"type": "demo.noop"}], name=f"j{i}") for i in range(4)), return_exceptions=True
            )
        listed = (await s.http.get("/api/jobs")).json()["items"]
    assert isinstance(outcomes[0], str)
    assert all(isinstance(o, httpx.ConnectError) for o in outcomes[1:])
    assert [job["name"] for job in listed] == ["j0"]


async def test_a_call_cancelled_while_it_waits_is_never_sent(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        transport = Counting(s.app)
        async with _client(transport, submit_in_flight=1) as client:
            first = asyncio.create_task(client.submit([{"type": "demo.noop"}], name="first"))
            await asyncio.sleep(0)  # its request is in flight
            waiting = asyncio.create_task(client.submit([{"type": "demo.noop"}], name="cancelled"))
            kept = asyncio.create_task(client.submit([{"type": "demo.noop"}], name="kept"))
            await asyncio.sleep(0)
            waiting.cancel()
            ids = [await first, await kept]
            with pytest.raises(asyncio.CancelledError):
                await waiting
        listed = (await s.http.get("/api/jobs")).json()["items"]
    assert sorted(job["name"] for job in listed) == ["first", "kept"]
    assert transport.sent == [("/api/jobs", 1), ("/api/jobs", 1)]
    assert len(set(ids)) == 2


def test_the_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="submit_in_flight"):
        AsyncClient(submit_in_flight=-1)
    with pytest.raises(ValueError, match="submit_batch_max"):
        AsyncClient(submit_batch_max=0)
