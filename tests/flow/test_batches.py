"""Batches of jobs (``POST /api/jobs:batch``, ``submit_many``): all stored or none, in order, retry-safe, quotas."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jobyard.client import AsyncClient
from jobyard.demo import yard
from jobyard.errors import ClientError, StoreError
from jobyard.model import ActionSpecIn
from jobyard.store.repository import NewJob
from tests.harness import bearer, make_key, stack


def _jobs(*sizes: int, queue: str | None = None) -> list[dict[str, Any]]:
    action = {"type": "demo.noop"} if queue is None else {"type": "demo.noop", "queue": queue}
    return [{"name": f"job-{i}", "actions": [action] * size} for i, size in enumerate(sizes)]


async def _job_count(s: Any) -> int:
    return len((await s.http.get("/api/jobs", params={"limit": 200})).json()["items"])


async def test_a_batch_is_stored_in_order_and_each_job_runs_as_if_submitted_alone(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        response = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(1, 3, 2)})
        accepted = response.json()["jobs"]
        finals = [await s.wait(job["id"]) for job in accepted]
        views = [(await s.http.get(f"/api/jobs/{job['id']}")).json() for job in accepted]
        metrics = (await s.http.get("/metrics")).text
    if s.runtime.repo.dialect == "postgresql":  # the three jobs went in one statement
        assert "jobyard_submit_statements_total 1.0" in metrics
        assert "jobyard_submit_statement_jobs_total 3.0" in metrics
    assert response.status_code == 202 and len(accepted) == 3
    assert all(job["status"] == "pending" and job["status_url"] == f"/api/jobs/{job['id']}/status" for job in accepted)
    assert [view["name"] for view in views] == ["job-0", "job-1", "job-2"]  # the order sent
    assert [len(view["actions"]) for view in views] == [1, 3, 2]
    assert [final["status"] for final in finals] == ["succeeded"] * 3
    assert [final["progress"]["succeeded"] for final in finals] == [1, 3, 2]


async def test_one_job_at_fault_refuses_the_whole_batch_naming_it(make_settings: Any) -> None:
    async with stack(make_settings(max_jobs_per_batch=3, max_payload_bytes=100), yard) as s:
        jobs = _jobs(1, 2)
        jobs[1]["actions"][1] = {"type": "nope"}
        unknown = await s.http.post("/api/jobs:batch", json={"jobs": jobs})
        big = _jobs(1, 1)
        big[1]["actions"][0] = {"type": "demo.noop", "payload": {"blob": "x" * 200}}
        too_large = await s.http.post("/api/jobs:batch", json={"jobs": big})
        too_many = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(1, 1, 1, 1)})
        empty = await s.http.post("/api/jobs:batch", json={"jobs": []})
        empty_job = await s.http.post("/api/jobs:batch", json={"jobs": [*_jobs(1), {"actions": []}]})
        hook = await s.http.post(
            "/api/jobs:batch", json={"jobs": [*_jobs(1), {**_jobs(1)[0], "webhook_url": "http://x"}]}
        )
        count = await _job_count(s)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "jobs", 1, "actions", 1, "type"]
    assert too_large.status_code == 413 and "action 0 (body.jobs.1.actions.0.payload)" in too_large.json()["detail"]
    assert too_many.status_code == 422
    error = too_many.json()["detail"][0]
    assert error["loc"] == ["body", "jobs"] and "at most 3 jobs (JOBYARD_MAX_JOBS_PER_BATCH)" in error["msg"]
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "jobs"]
    assert empty_job.status_code == 422 and empty_job.json()["detail"][0]["loc"] == ["body", "jobs", 1, "actions"]
    assert hook.status_code == 422 and hook.json()["detail"][0]["loc"] == ["body", "jobs", 1, "webhook_url"]
    assert count == 0  # nothing of any refused batch was written


async def test_a_batch_the_store_refuses_writes_none_of_its_jobs(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        good = ActionSpecIn(type="demo.noop", queue="default", payload=None, max_attempts=3, timeout=60.0)
        bad = ActionSpecIn(type="demo.noop", queue=None, payload=None, max_attempts=3, timeout=60.0)  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            await s.runtime.repo.create_jobs(
                tenant_id="default", jobs=[NewJob("a", {}, [good, good]), NewJob("b", {}, [good, bad])]
            )
        count = await _job_count(s)
    assert count == 0  # the first job went with the second


async def test_a_batch_with_an_idempotency_key_is_retry_safe_as_a_whole(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        headers = {"Idempotency-Key": "nightly-2026-12-01"}
        first = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(1, 2)}, headers=headers)
        again = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(1, 2)}, headers=headers)
        other = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(2, 1)}, headers=headers)
        count = await _job_count(s)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in first.json()["jobs"]]
    assert other.status_code == 409 and "Idempotency-Key 'nightly-2026-12-01'" in other.json()["detail"]
    assert count == 2


async def test_a_batch_counts_each_of_its_jobs_against_the_tenant_s_quotas(make_settings: Any) -> None:
    async with stack(make_settings(tenant_jobs_per_minute=3, tenant_max_queued_actions=5), yard) as s:
        alice, _ = await make_key(s, "alice")
        bob, _ = await make_key(s, "bob")

        async def batch(key: str, *sizes: int) -> httpx.Response:
            jobs = _jobs(*sizes, queue="parked")  # no worker consumes it: the actions stay waiting
            response: httpx.Response = await s.http.post("/api/jobs:batch", json={"jobs": jobs}, headers=bearer(key))
            return response

        larger_than_the_quota = await batch(alice, 1, 1, 1, 1)
        two = await batch(alice, 1, 1)
        over_per_minute = await batch(alice, 1, 1)
        over_waiting = await batch(bob, 3, 3)
        bob_fits = await batch(bob, 3, 2)
    assert larger_than_the_quota.status_code == 429
    assert "fewer than the 4 of this batch: send smaller batches" in larger_than_the_quota.json()["detail"]
    assert two.status_code == 202 and over_per_minute.status_code == 429
    assert "at most 3 jobs per minute" in over_per_minute.json()["detail"]
    assert over_waiting.status_code == 429 and "these 2 jobs add 6" in over_waiting.json()["detail"]
    assert bob_fits.status_code == 202


async def test_a_batch_belongs_to_its_caller_s_tenant(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        alice, _ = await make_key(s, "alice")
        alice_admin, _ = await make_key(s, "alice", "admin")
        bob, _ = await make_key(s, "bob")
        response = await s.http.post("/api/jobs:batch", json={"jobs": _jobs(1, 1)}, headers=bearer(alice))
        ids = [job["id"] for job in response.json()["jobs"]]
        alice_sees = [(await s.http.get(f"/api/jobs/{i}", headers=bearer(alice))).status_code for i in ids]
        bob_sees = [(await s.http.get(f"/api/jobs/{i}", headers=bearer(bob))).status_code for i in ids]
        audit = (await s.http.get("/api/audit", params={"action": "job.submitted"}, headers=bearer(alice_admin))).json()
    assert alice_sees == [200, 200] and bob_sees == [404, 404]
    assert sorted(entry["target"] for entry in audit["items"]) == sorted(ids)  # one audit row per job
    assert all(entry["details"]["batch"] == 2 for entry in audit["items"])


async def test_the_python_client_submits_a_batch_and_follows_its_jobs(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        client = AsyncClient("http://jobyard.test", transport=httpx.ASGITransport(app=s.app))
        try:
            ids = await client.submit_many(_jobs(2, 1), idempotency_key="k1")
            again = await client.submit_many(_jobs(2, 1), idempotency_key="k1")
            finals = [await client.wait(job_id, timeout=20, interval=0.05) for job_id in ids]
            first = await client.jobs(limit=1)
            second = await client.jobs(limit=1, cursor=first["next_cursor"], status="succeeded")
            with pytest.raises(ClientError) as refused:
                await client.submit_many([{"actions": [{"type": "nope"}]}])
        finally:
            await client.aclose()
    assert again == ids and [final["status"] for final in finals] == ["succeeded", "succeeded"]
    assert [job["id"] for job in first["items"] + second["items"]] == ids[::-1]  # newest first, a page each
    assert second["next_cursor"] is None
    assert refused.value.status_code == 422
    assert refused.value.detail[0]["loc"] == ["body", "jobs", 0, "actions", 0, "type"]  # as the API sent it
    assert str(refused.value).startswith("HTTP 422: body.jobs[0].actions[0].type: unknown action type 'nope'")
