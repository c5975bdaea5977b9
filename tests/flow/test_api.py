"""The HTTP API's contract: validation, errors, listing and health."""

from __future__ import annotations

from typing import Any

from jobyard.demo import yard as demo_yard
from tests.harness import stack


async def test_invalid_submissions_get_422_naming_the_field_and_write_nothing(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        unknown = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}, {"type": "nope"}]})
        empty = await s.http.post("/api/jobs", json={"actions": []})
        malformed = await s.http.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
        bad_attempts = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop", "max_attempts": 0}]})
        extra = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop", "colour": "red"}]})
        listed = (await s.http.get("/api/jobs")).json()
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "actions", 1, "type"]
    assert "nope" in unknown.json()["detail"][0]["msg"] and "demo.noop" in unknown.json()["detail"][0]["msg"]
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "actions"]
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    assert bad_attempts.status_code == 422
    assert bad_attempts.json()["detail"][0]["loc"] == ["body", "actions", 0, "max_attempts"]
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "actions", 0, "colour"]
    assert listed["items"] == []


async def test_submit_answers_202_with_the_status_url(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        response = await s.http.post("/api/jobs", json={"name": "n", "actions": [{"type": "demo.noop"}]})
        body = response.json()
        job = (await s.http.get(f"/api/jobs/{body['id']}")).json()
    assert response.status_code == 202
    assert body["status"] == "pending" and body["status_url"] == f"/api/jobs/{body['id']}/status"
    assert response.headers["location"] == f"/api/jobs/{body['id']}"
    assert job["name"] == "n" and job["actions"][0]["type"] == "demo.noop" and job["actions"][0]["max_attempts"] == 3


async def test_unknown_jobs_and_results_are_404(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        missing = "01a20000-0000-7000-8000-000000000000"
        assert (await s.http.get(f"/api/jobs/{missing}")).status_code == 404
        assert (await s.http.get(f"/api/jobs/{missing}/status")).status_code == 404
        assert (await s.http.get(f"/api/results/{missing}")).status_code == 404
        assert (await s.http.get("/api/jobs/not-a-uuid")).status_code == 422


async def test_jobs_list_pages_newest_first_and_filters_by_status(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        ids = [await s.submit([{"type": "demo.noop"}], name=f"j{i}") for i in range(5)]
        for job_id in ids:
            await s.wait(job_id)
        first = (await s.http.get("/api/jobs", params={"limit": 2})).json()
        second = (await s.http.get("/api/jobs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        third = (await s.http.get("/api/jobs", params={"limit": 2, "cursor": second["next_cursor"]})).json()
        failed = (await s.http.get("/api/jobs", params={"status": "failed"})).json()
        bad = await s.http.get("/api/jobs", params={"status": "sleeping"})
    names = [j["name"] for page in (first, second, third) for j in page["items"]]
    assert names == ["j4", "j3", "j2", "j1", "j0"] and third["next_cursor"] is None
    assert failed["items"] == [] and bad.status_code == 422


async def test_health_and_readiness_report_each_dependency(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        health = (await s.http.get("/healthz")).json()
        ready = await s.http.get("/readyz")
        types = (await s.http.get("/api/action-types")).json()
        openapi = (await s.http.get("/openapi.json")).json()
    assert health["status"] == "ok"
    assert ready.status_code == 200 and ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "redis": "ok"},
    }
    assert {t["name"] for t in types} == {"demo.noop", "demo.sleep", "demo.flaky", "demo.fail"}
    assert "/api/jobs/{job_id}/status" in openapi["paths"]


async def test_a_driver_error_that_escapes_translation_is_a_503_and_other_errors_a_500(make_settings: Any) -> None:
    import asyncpg
    import httpx

    missing = "01a20000-0000-7000-8000-000000000000"

    async def vanished(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.exceptions.ProtocolError("unexpected message while the server shuts down")

    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a programming error")

    async with stack(make_settings(), demo_yard) as s:
        transport = httpx.ASGITransport(app=s.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            original = s.runtime.repo.get_action
            try:
                s.runtime.repo.get_action = vanished  # type: ignore[method-assign]
                outage = await http.get(f"/api/results/{missing}")
                s.runtime.repo.get_action = bug  # type: ignore[method-assign]
                broken = await http.get(f"/api/results/{missing}")
            finally:
                s.runtime.repo.get_action = original  # type: ignore[method-assign]
    assert outage.status_code == 503 and outage.headers["retry-after"], outage.text
    assert broken.status_code == 500 and broken.json() == {"detail": "internal error"}
