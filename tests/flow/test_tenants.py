"""Tenants and API keys over the HTTP API: authentication, scopes, isolation on every endpoint, revocation, audit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets

from jobyard.demo import yard
from jobyard.errors import ConfigurationError
from jobyard.store import create_repository
from tests.harness import Stack, bearer, make_key, stack
from tests.liveclient import SseEvent, serve, sse_events


async def _final(http: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = (await http.get(f"/api/jobs/{job_id}/status", headers=headers)).json()
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def test_a_loopback_api_without_keys_serves_the_default_tenant_until_a_key_exists(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        before = await s.http.get("/api/jobs")
        key, _ = await make_key(s, "acme")
        anonymous = await s.http.get("/api/jobs")
        with_key = await s.http.get("/api/jobs", headers=bearer(key))
    assert before.status_code == 200
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert "an API key is required" in anonymous.json()["detail"]
    assert with_key.status_code == 200


async def test_auth_required_refuses_callers_without_a_key_even_on_loopback(make_settings: Any) -> None:
    async with stack(make_settings(auth="required"), yard) as s:
        response = await s.http.get("/api/jobs")
        health = await s.http.get("/healthz")
    assert response.status_code == 401 and health.status_code == 200


async def test_auth_off_ignores_credentials_and_serves_the_default_tenant(make_settings: Any) -> None:
    async with stack(make_settings(auth="off"), yard) as s:
        await make_key(s, "acme")
        anonymous = await s.http.get("/api/jobs")
        nonsense = await s.http.get("/api/jobs", headers=bearer("not-a-key"))
    assert anonymous.status_code == 200 and nonsense.status_code == 200


async def test_keys_work_as_bearer_or_x_api_key_and_wrong_ones_get_401(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        key, _ = await make_key(s, "acme")
        by_bearer = await s.http.get("/api/jobs", headers=bearer(key))
        by_header = await s.http.get("/api/jobs", headers={"X-API-Key": key})
        tampered = await s.http.get("/api/jobs", headers=bearer(key[:-2] + ("AA" if key[-2:] != "AA" else "BB")))
        malformed = await s.http.get("/api/jobs", headers=bearer("jy_nothing"))
        basic = await s.http.get("/api/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert by_bearer.status_code == 200 and by_header.status_code == 200
    assert tampered.status_code == 401 and "invalid or revoked API key" in tampered.json()["detail"]
    assert malformed.status_code == 401 and basic.status_code == 401


async def test_scopes_limit_what_a_key_may_do(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        reader, _ = await make_key(s, "acme", "jobs:read")
        writer, _ = await make_key(s, "acme", "jobs:write")
        admin, _ = await make_key(s, "acme", "admin")
        job = {"actions": [{"type": "demo.noop"}]}
        read_submits = await s.http.post("/api/jobs", json=job, headers=bearer(reader))
        write_submits = await s.http.post("/api/jobs", json=job, headers=bearer(writer))
        job_id = write_submits.json()["id"]
        write_reads = await s.http.get(f"/api/jobs/{job_id}", headers=bearer(writer))
        read_reads = await s.http.get(f"/api/jobs/{job_id}", headers=bearer(reader))
        read_cancels = await s.http.post(f"/api/jobs/{job_id}/cancel", headers=bearer(reader))
        read_keys = await s.http.get("/api/keys", headers=bearer(reader))
        write_audit = await s.http.get("/api/audit", headers=bearer(writer))
        admin_everything = [
            (await s.http.get("/api/keys", headers=bearer(admin))).status_code,
            (await s.http.get("/api/audit", headers=bearer(admin))).status_code,
            (await s.http.get(f"/api/jobs/{job_id}", headers=bearer(admin))).status_code,
            (await s.http.post("/api/jobs", json=job, headers=bearer(admin))).status_code,
        ]
    assert read_submits.status_code == 403 and "'jobs:write' scope" in read_submits.json()["detail"]
    assert write_submits.status_code == 202 and write_reads.status_code == 403
    assert read_reads.status_code == 200 and read_cancels.status_code == 403
    assert read_keys.status_code == 403 and write_audit.status_code == 403
    assert "'admin' scope" in read_keys.json()["detail"]
    assert admin_everything == [200, 200, 200, 202]


async def test_a_revoked_key_is_refused_by_the_very_next_request(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        admin, _ = await make_key(s, "acme", "admin")
        key, key_id = await make_key(s, "acme", "jobs:read", name="doomed")
        assert (await s.http.get("/api/jobs", headers=bearer(key))).status_code == 200  # cached now
        revoked = await s.http.delete(f"/api/keys/{key_id}", headers=bearer(admin))
        after = await s.http.get("/api/jobs", headers=bearer(key))
        again = await s.http.delete(f"/api/keys/{key_id}", headers=bearer(admin))
        listed = (await s.http.get("/api/keys", headers=bearer(admin))).json()["items"]
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert again.status_code == 409
    assert {k["name"]: k["revoked_at"] is not None for k in listed} == {None: False, "doomed": True}


async def test_key_look_ups_are_cached_not_read_from_the_store_per_request(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stack(make_settings(), yard) as s:
        key, _ = await make_key(s, "acme", "jobs:read")
        reads = 0
        original = s.runtime.repo.get_api_key_by_prefix

        async def counting(prefix: str) -> Any:
            nonlocal reads
            reads += 1
            return await original(prefix)

        monkeypatch.setattr(s.runtime.repo, "get_api_key_by_prefix", counting)
        codes = {(await s.http.get("/api/jobs", headers=bearer(key))).status_code for _ in range(20)}
    assert codes == {200} and reads == 1


async def test_creating_a_key_through_the_api_shows_it_once_and_stores_only_its_hash(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        admin, _ = await make_key(s, "acme", "admin")
        created = await s.http.post(
            "/api/keys", json={"scopes": ["jobs:read"], "name": "dashboard"}, headers=bearer(admin)
        )
        body = created.json()
        works = await s.http.get("/api/jobs", headers=bearer(body["key"]))
        listed = (await s.http.get("/api/keys", headers=bearer(admin))).json()["items"]
        stored = await s.runtime.repo.get_api_key_by_prefix(body["prefix"])
        bad_scope = await s.http.post("/api/keys", json={"scopes": ["root"]}, headers=bearer(admin))
    assert created.status_code == 201 and body["tenant"] == "acme" and body["scopes"] == ["jobs:read"]
    assert body["key"].startswith(f"jy_{body['prefix']}_") and works.status_code == 200
    assert all("key" not in k for k in listed)
    assert stored is not None and body["key"] not in repr(stored) and len(stored.key_hash) == 64
    assert bad_scope.status_code == 422


async def _tenant_events(url: str, key: str, seen: list[Any]) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("GET", "/api/events", headers=bearer(key)) as response,
    ):
        async for item in sse_events(response):
            if isinstance(item, SseEvent):
                seen.append(item.data)


async def test_no_endpoint_lets_a_tenant_reach_another_tenants_jobs(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        assert await s.app.state.hub.wait_healthy(10)
        alice, alice_key_id = await make_key(s, "alice", "admin")
        bob, _ = await make_key(s, "bob", "admin")
        a, b = bearer(alice), bearer(bob)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            bob_sees: list[Any] = []
            bob_stream = asyncio.create_task(_tenant_events(url, bob, bob_sees))
            await _wait_clients(s, 1)
            failed_job = (await http.post("/api/jobs", json={"actions": [{"type": "demo.fail"}]}, headers=a)).json()
            final = await _final(http, failed_job["id"], a)
            dead_id = final["actions"][0]["id"]
            slow = {"actions": [{"type": "demo.sleep", "payload": {"seconds": 30}}], "name": "alice's secret job"}
            slow_id = (await http.post("/api/jobs", json=slow, headers=a)).json()["id"]
            job_paths = [f"/api/jobs/{failed_job['id']}", f"/api/jobs/{failed_job['id']}/status"]
            as_bob = {
                "job": (await http.get(job_paths[0], headers=b)).status_code,
                "status": (await http.get(job_paths[1], headers=b)).status_code,
                "result": (await http.get(f"/api/results/{dead_id}", headers=b)).status_code,
                "cancel": (await http.post(f"/api/jobs/{slow_id}/cancel", headers=b)).status_code,
                "retry": (await http.post(f"/api/actions/{dead_id}/retry", headers=b)).status_code,
                "replay": (await http.post(f"/api/dead-letters/{dead_id}/replay", headers=b)).status_code,
                "replay with budget": (
                    await http.post(f"/api/dead-letters/{dead_id}/replay", json={"max_attempts": 2}, headers=b)
                ).status_code,
                "sse": (await http.get(f"/api/jobs/{slow_id}/events", headers=b)).status_code,
                "page": (await http.get(f"/jobs/{slow_id}", headers=b)).status_code,
                "revoke alice's key": (await http.delete(f"/api/keys/{alice_key_id}", headers=b)).status_code,
            }
            bob_lists = {
                "jobs": (await http.get("/api/jobs", headers=b)).json()["items"],
                "search": (await http.get("/api/jobs", params={"q": slow_id}, headers=b)).json()["items"],
                "dead letters": (await http.get("/api/dead-letters", headers=b)).json()["items"],
                "keys": [k for k in (await http.get("/api/keys", headers=b)).json()["items"] if k["tenant"] != "bob"],
                "audit": [e for e in (await http.get("/api/audit", headers=b)).json()["items"] if e["tenant"] != "bob"],
            }
            counts = (await http.get("/api/job-counts", headers=b)).json()
            rows = (await http.get("/_fragments/job-rows", params={"q": slow_id}, headers=b)).text
            dashboard = (await http.get("/", headers=b)).text
            with pytest.raises(websockets.exceptions.InvalidStatus):
                ws_url = url.replace("http", "ws") + f"/api/jobs/{slow_id}/ws"
                async with websockets.connect(ws_url, additional_headers=b) as ws:
                    await ws.recv()
            async with websockets.connect(ws_url, additional_headers=a) as ws:  # the owner's stream opens
                alice_ws = json.loads(await ws.recv())["event"]
            # the owner still sees all of it, and gets 200/202 where bob got 404
            alice_codes = [
                (await http.get(job_paths[0], headers=a)).status_code,
                (await http.post(f"/api/dead-letters/{dead_id}/replay", headers=a)).status_code,
                (await http.post(f"/api/jobs/{slow_id}/cancel", headers=a)).status_code,
            ]
            await asyncio.sleep(0.3)  # let any wrongly routed event arrive
            bob_stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bob_stream
    assert as_bob == dict.fromkeys(as_bob, 404), as_bob
    assert all(found == [] for found in bob_lists.values()), bob_lists
    assert set(counts.values()) == {0}
    assert slow_id not in rows and "alice's secret job" not in dashboard
    assert alice_ws == "snapshot" and alice_codes == [200, 202, 200]
    assert [e for e in bob_sees if e.get("job_id") in (failed_job["id"], slow_id)] == []


async def _wait_clients(s: Stack, count: int) -> None:
    deadline = time.monotonic() + 20
    while s.app.state.hub.client_count < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_the_audit_log_records_who_did_what_newest_first_in_pages(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        admin, admin_id = await make_key(s, "acme", "admin", name="ops-admin")
        h = bearer(admin)
        failed = (await s.http.post("/api/jobs", json={"actions": [{"type": "demo.fail"}]}, headers=h)).json()["id"]
        dead_id = (await _final(s.http, failed, h))["actions"][0]["id"]
        await s.http.post(f"/api/actions/{dead_id}/retry", headers=h)
        await _final(s.http, failed, h)
        await s.http.post(f"/api/dead-letters/{dead_id}/replay", headers=h)
        sleepy = {"actions": [{"type": "demo.sleep", "payload": {"seconds": 30}}]}
        slow = (await s.http.post("/api/jobs", json=sleepy, headers=h)).json()["id"]
        await s.http.post(f"/api/jobs/{slow}/cancel", headers=h)
        created = (await s.http.post("/api/keys", json={"scopes": ["jobs:read"]}, headers=h)).json()
        await s.http.delete(f"/api/keys/{created['id']}", headers=h)
        everything = (await s.http.get("/api/audit", headers=h)).json()
        first = (await s.http.get("/api/audit", params={"limit": 4}, headers=h)).json()
        rest = (await s.http.get("/api/audit", params={"cursor": first["next_cursor"]}, headers=h)).json()
        cancels = (await s.http.get("/api/audit", params={"action": "job.cancelled"}, headers=h)).json()["items"]
        bad_cursor = await s.http.get("/api/audit", params={"cursor": "abc"}, headers=h)
    actions = [e["action"] for e in everything["items"]]
    assert actions == [
        "key.revoked", "key.created", "job.cancelled", "job.submitted",
        "action.replayed", "action.retried", "job.submitted",
    ]  # fmt: skip
    assert {e["actor"] for e in everything["items"]} == {"ops-admin"}
    assert {e["actor_key_id"] for e in everything["items"]} == {admin_id}
    targets = {e["action"]: e["target"] for e in everything["items"]}
    assert targets["job.cancelled"] == slow and targets["action.retried"] == dead_id
    assert targets["key.revoked"] == created["id"]
    assert [e["id"] for e in first["items"] + rest["items"]] == [e["id"] for e in everything["items"]]
    assert [e["target"] for e in cancels] == [slow]
    assert bad_cursor.status_code == 422


async def test_an_unknown_job_id_and_another_tenants_job_id_look_the_same(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        alice, _ = await make_key(s, "alice")
        bob, _ = await make_key(s, "bob")
        job = {"actions": [{"type": "demo.noop"}]}
        job_id = (await s.http.post("/api/jobs", json=job, headers=bearer(alice))).json()["id"]
        other_id = str(uuid.uuid4())
        theirs = await s.http.get(f"/api/jobs/{job_id}/status", headers=bearer(bob))
        unknown = await s.http.get(f"/api/jobs/{other_id}/status", headers=bearer(bob))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"].replace(job_id, "ID") == unknown.json()["detail"].replace(other_id, "ID")


async def test_an_app_bound_off_loopback_refuses_to_start_without_keys_and_starts_with_one(make_settings: Any) -> None:
    settings = make_settings(host="0.0.0.0")
    with pytest.raises(ConfigurationError, match=r"refusing to serve on 0\.0\.0\.0 without API keys"):
        async with stack(settings, yard):
            pass
    repo = create_repository(settings)
    try:
        await repo.create_api_key(
            tenant_id="acme", name=None, prefix="0123456789ab", key_hash="0" * 64, scopes=["admin"]
        )
    finally:
        await repo.close()
    async with stack(settings, yard) as s:
        assert (await s.http.get("/api/jobs")).status_code == 401


async def test_schedules_and_webhooks_are_scoped_to_their_tenant_and_audited(make_settings: Any) -> None:
    async with stack(make_settings(webhook_allow_private=True), yard) as s:
        acme, _ = await make_key(s, "acme", "admin")
        globex, _ = await make_key(s, "globex", "admin")
        reader, _ = await make_key(s, "acme", "jobs:read")
        writer, _ = await make_key(s, "acme", "jobs:write")
        body = {"name": "nightly", "every": "1h", "job": {"actions": [{"type": "demo.noop"}]}}
        schedule = await s.http.post("/api/schedules", json=body, headers=bearer(acme))
        hook = await s.http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=bearer(acme))
        sid, wid = schedule.json()["id"], hook.json()["id"]
        other = bearer(globex)
        seen_by_other = {
            "schedules": (await s.http.get("/api/schedules", headers=other)).json()["items"],
            "webhooks": (await s.http.get("/api/webhooks", headers=other)).json()["items"],
            "deliveries": (await s.http.get("/api/webhooks/deliveries", headers=other)).json()["items"],
        }
        other_codes = [
            (await s.http.get(f"/api/schedules/{sid}", headers=other)).status_code,
            (await s.http.post(f"/api/schedules/{sid}/pause", headers=other)).status_code,
            (await s.http.delete(f"/api/schedules/{sid}", headers=other)).status_code,
            (await s.http.get(f"/api/webhooks/{wid}", headers=other)).status_code,
            (await s.http.patch(f"/api/webhooks/{wid}", json={"active": False}, headers=other)).status_code,
            (await s.http.delete(f"/api/webhooks/{wid}", headers=other)).status_code,
        ]
        reader_creates = await s.http.post("/api/schedules", json=body, headers=bearer(reader))
        reader_lists = await s.http.get("/api/schedules", headers=bearer(reader))
        writer_hooks = await s.http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=bearer(writer))
        paused = await s.http.post(f"/api/schedules/{sid}/pause", headers=bearer(acme))
        audit = (await s.http.get("/api/audit", headers=bearer(acme))).json()["items"]
        other_audit = (await s.http.get("/api/audit", headers=other)).json()["items"]
    assert schedule.status_code == 201 and hook.status_code == 201
    assert seen_by_other == {"schedules": [], "webhooks": [], "deliveries": []}
    assert other_codes == [404] * 6
    assert reader_creates.status_code == 403 and reader_lists.status_code == 200
    assert writer_hooks.status_code == 403 and paused.status_code == 200
    actions = [(a["action"], a["target"]) for a in audit]
    assert ("schedule.created", sid) in actions and ("webhook.created", wid) in actions
    assert ("schedule.paused", sid) in actions
    assert all(a["tenant"] == "globex" for a in other_audit)
