"""Limits: request body size, actions per job, payload size per action, per-tenant quotas; each names its setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from jobyard.demo import yard
from tests.harness import bearer, make_key, stack


async def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(make_settings: Any) -> None:
    async with stack(make_settings(max_body_bytes=2048), yard) as s:
        big = {"actions": [{"type": "demo.noop", "payload": {"blob": "x" * 4000}}]}
        response = await s.http.post("/api/jobs", json=big)
        listed = (await s.http.get("/api/jobs")).json()["items"]
    assert response.status_code == 413
    assert "larger than the limit of 2048 bytes (JOBYARD_MAX_BODY_BYTES)" in response.json()["detail"]
    assert listed == []


async def test_a_streamed_body_without_content_length_is_cut_off_at_the_limit(make_settings: Any) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield b'{"actions": [{"type": "demo.noop", "payload": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    async def small() -> AsyncIterator[bytes]:
        yield b'{"actions": [{"type": "demo.noop"}]}'

    async with stack(make_settings(max_body_bytes=4096), yard) as s:
        headers = {"content-type": "application/json"}
        too_big = await s.http.post("/api/jobs", content=endless(), headers=headers)
        fine = await s.http.post("/api/jobs", content=small(), headers=headers)
    assert "content-length" not in too_big.request.headers and too_big.request.headers["transfer-encoding"] == "chunked"
    assert too_big.status_code == 413 and "JOBYARD_MAX_BODY_BYTES" in too_big.json()["detail"]
    assert fine.status_code == 202


async def test_too_many_actions_in_one_job_is_a_422_naming_the_limit(make_settings: Any) -> None:
    async with stack(make_settings(max_actions_per_job=3), yard) as s:
        response = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}] * 4})
        ok = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}] * 3})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "actions"] and "at most 3 actions (JOBYARD_MAX_ACTIONS_PER_JOB)" in error["msg"]
    assert ok.status_code == 202


async def test_an_action_payload_over_the_limit_is_a_413_naming_the_action(make_settings: Any) -> None:
    async with stack(make_settings(max_payload_bytes=100), yard) as s:
        actions = [{"type": "demo.noop", "payload": {"n": 1}}, {"type": "demo.noop", "payload": {"blob": "x" * 200}}]
        response = await s.http.post("/api/jobs", json={"actions": actions})
        listed = (await s.http.get("/api/jobs")).json()["items"]
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "action 1 (body.actions.1.payload)" in detail and "limit is 100 (JOBYARD_MAX_PAYLOAD_BYTES)" in detail
    assert listed == []


async def test_a_tenant_over_its_jobs_per_minute_gets_429_while_others_go_on(make_settings: Any) -> None:
    async with stack(make_settings(tenant_jobs_per_minute=3), yard) as s:
        alice, _ = await make_key(s, "alice")
        bob, _ = await make_key(s, "bob")
        job = {"actions": [{"type": "demo.noop"}]}
        codes = [(await s.http.post("/api/jobs", json=job, headers=bearer(alice))).status_code for _ in range(4)]
        refused = await s.http.post("/api/jobs", json=job, headers=bearer(alice))
        bob_code = (await s.http.post("/api/jobs", json=job, headers=bearer(bob))).status_code
    assert codes == [202, 202, 202, 429] and bob_code == 202
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "at most 3 jobs per minute (JOBYARD_TENANT_JOBS_PER_MINUTE)" in refused.json()["detail"]


async def test_a_tenant_may_have_only_so_many_actions_waiting(make_settings: Any) -> None:
    async with stack(make_settings(tenant_max_queued_actions=3), yard) as s:
        alice, _ = await make_key(s, "alice")
        bob, _ = await make_key(s, "bob")

        async def submit(key: str, n: int) -> Any:
            parked = {"type": "demo.noop", "queue": "parked"}  # no worker consumes it: the actions stay waiting
            return await s.http.post("/api/jobs", json={"actions": [parked] * n}, headers=bearer(key))

        too_many_at_once = await submit(alice, 4)
        first = await submit(alice, 2)
        over = await submit(alice, 2)
        fits = await submit(alice, 1)
        bob_response = await submit(bob, 3)
    assert too_many_at_once.status_code == 429 and first.status_code == 202
    assert over.status_code == 429 and fits.status_code == 202 and bob_response.status_code == 202
    detail = over.json()["detail"]
    assert "at most 3 actions waiting (JOBYARD_TENANT_MAX_QUEUED_ACTIONS)" in detail and "2 are waiting" in detail


async def test_json_the_store_cannot_keep_is_a_422_naming_the_field(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        headers = {"content-type": "application/json"}
        huge_int = await s.http.post(
            "/api/jobs",
            content=b'{"actions": [{"type": "demo.noop", "payload": 123456789012345678901234}]}',
            headers=headers,
        )
        surrogate = await s.http.post(
            "/api/jobs", content=b'{"actions": [{"type": "demo.noop"}], "metadata": {"k": "\\ud800"}}', headers=headers
        )
        nul = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop", "payload": {"k": "a\x00b"}}]})
        listed = (await s.http.get("/api/jobs")).json()["items"]
    assert huge_int.status_code == 422 and huge_int.json()["detail"][0]["loc"] == ["body", "actions", 0, "payload"]
    assert "64 bits" in huge_int.json()["detail"][0]["msg"]
    assert surrogate.status_code == 422 and surrogate.json()["detail"][0]["loc"] == ["body", "metadata"]
    assert nul.status_code == 422 and "NUL" in nul.json()["detail"][0]["msg"]
    assert listed == []
