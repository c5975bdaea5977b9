"""GET /api/jobs/{id}/status and POST /api/jobs are answered below FastAPI, exactly as their routes would."""

from __future__ import annotations

from typing import Any

from jobyard.api import fastpath
from jobyard.demo import yard as demo_yard
from tests.harness import bearer, make_key, stack


class Spy:
    """Counts what the fast path served: status bodies produced, submissions it ran (the routes call the module
    functions of ``routes_jobs`` themselves, so they are not counted)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.served = 0
        self.submitted = 0
        status_body, accept_job = fastpath.status_body, fastpath.accept_job

        async def counting_status(*args: Any) -> bytes:
            body = await status_body(*args)
            self.served += 1
            return body

        async def counting_accept(*args: Any) -> Any:
            self.submitted += 1
            return await accept_job(*args)

        monkeypatch.setattr(fastpath, "status_body", counting_status)
        monkeypatch.setattr(fastpath, "accept_job", counting_accept)


def routes_only(monkeypatch: Any) -> None:
    """Switch the fast paths off: every request goes through FastAPI's routes."""
    monkeypatch.setattr(fastpath, "_STATUS", fastpath.re.compile(r"(?!)"))
    monkeypatch.setattr(fastpath, "_JOBS", "/nowhere")


async def test_the_fast_path_answers_exactly_what_the_route_answers(make_settings: Any, monkeypatch: Any) -> None:
    spy = Spy(monkeypatch)
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.noop"}] * 3)
        await s.wait(job_id)  # (polls the status too)
        spy.served = 0
        fast = await s.http.get(f"/api/jobs/{job_id}/status")
        served = spy.served
        routes_only(monkeypatch)  # the same read through FastAPI's route
        routed = await s.http.get(f"/api/jobs/{job_id}/status")
    assert served == 1 and spy.served == 1
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.content == routed.content and fast.json()["status"] == "succeeded"


async def test_errors_are_the_routes_own(make_settings: Any, monkeypatch: Any) -> None:
    spy = Spy(monkeypatch)
    async with stack(make_settings(auth="required"), demo_yard) as s:
        reader, _ = await make_key(s, "acme", "jobs:read", "jobs:write")
        writer_only, _ = await make_key(s, "acme", "jobs:write")
        other, _ = await make_key(s, "globex", "jobs:read")
        submitted = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}]}, headers=bearer(reader))
        job_id = submitted.json()["id"]
        spy.served = 0
        ok = await s.http.get(f"/api/jobs/{job_id}/status", headers=bearer(reader))
        anonymous = await s.http.get(f"/api/jobs/{job_id}/status")
        no_scope = await s.http.get(f"/api/jobs/{job_id}/status", headers=bearer(writer_only))
        other_tenant = await s.http.get(f"/api/jobs/{job_id}/status", headers=bearer(other))
        missing = await s.http.get("/api/jobs/01a20000-0000-7000-8000-000000000000/status", headers=bearer(reader))
        not_uuid = await s.http.get("/api/jobs/0123456789abcdef0123456789abcdeX/status", headers=bearer(reader))
    assert ok.status_code == 200 and spy.served == 1
    assert anonymous.status_code == 401 and anonymous.json()["detail"]
    assert no_scope.status_code == 403 and "jobs:read" in no_scope.json()["detail"]
    assert other_tenant.status_code == 404 and missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    assert not_uuid.status_code == 422


async def test_a_submission_through_the_fast_path_is_answered_as_the_route_answers(
    make_settings: Any, monkeypatch: Any
) -> None:
    spy = Spy(monkeypatch)
    job = {"name": "n", "metadata": {"k": 1}, "actions": [{"type": "demo.noop", "payload": {"x": 1}}] * 2}
    async with stack(make_settings(), demo_yard) as s:
        fast = await s.http.post("/api/jobs", json=job)
        stored = (await s.http.get(f"/api/jobs/{fast.json()['id']}")).json()
        submitted = spy.submitted
        routes_only(monkeypatch)
        routed = await s.http.post("/api/jobs", json=job)
        again = (await s.http.get(f"/api/jobs/{routed.json()['id']}")).json()
    assert submitted == 1 and spy.submitted == 1
    assert fast.status_code == routed.status_code == 202
    assert fast.headers["location"] == f"/api/jobs/{fast.json()['id']}"
    assert set(fast.json()) == set(routed.json()) == {"id", "status", "status_url"}
    strip = ("id", "status_url", "created_at", "started_at", "finished_at", "status", "counters", "actions")
    assert {k: v for k, v in stored.items() if k not in strip} == {k: v for k, v in again.items() if k not in strip}
    assert [a["type"] for a in stored["actions"]] == [a["type"] for a in again["actions"]] == ["demo.noop"] * 2


async def test_submissions_the_fast_path_leaves_to_the_route(make_settings: Any, monkeypatch: Any) -> None:
    spy = Spy(monkeypatch)
    async with stack(make_settings(), demo_yard) as s:
        job = {"actions": [{"type": "demo.noop"}]}
        keyed = await s.http.post("/api/jobs", json=job, headers={"Idempotency-Key": "k1"})
        replayed = await s.http.post("/api/jobs", json=job, headers={"Idempotency-Key": "k1"})
        invalid = await s.http.post("/api/jobs", json={"actions": []})
        not_json = await s.http.post("/api/jobs", content=b"{nope", headers={"content-type": "application/json"})
        form = await s.http.post("/api/jobs", data={"actions": "x"})
    assert spy.submitted == 0  # all of them were the route's
    assert keyed.status_code == 202 and replayed.status_code == 200 and replayed.json()["id"] == keyed.json()["id"]
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "actions"]
    assert not_json.status_code == 422 and not_json.json()["detail"][0]["type"] == "json_invalid"
    assert form.status_code == 422


async def test_errors_while_storing_are_answered_by_the_apps_own_handlers(make_settings: Any, monkeypatch: Any) -> None:
    spy = Spy(monkeypatch)
    async with stack(make_settings(tenant_jobs_per_minute=1), demo_yard) as s:
        unknown = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}, {"type": "nope"}]})
        first = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}]})
        over_quota = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}]})
    assert spy.submitted == 3  # each once: an error is never retried through the route (no quota charged twice)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "actions", 1, "type"]
    assert first.status_code == 202
    assert over_quota.status_code == 429 and int(over_quota.headers["retry-after"]) >= 1
