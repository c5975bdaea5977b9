"""Dashboard sign-in: a session cookie (httpOnly, SameSite=Lax) kept in the KV, CSRF on unsafe requests, sign-out."""

from __future__ import annotations

import re
from typing import Any

import httpx

from jobyard.demo import yard
from tests.harness import Stack, bearer, make_key, stack


def _form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def _sign_in(s: Stack, key: str, next_path: str = "/") -> httpx.Response:
    form = await s.http.get("/login", params={"next": next_path})
    token = _form_token(form.text)
    return await s.http.post("/login", data={"key": key, "csrf_token": token, "next": next_path})


async def test_pages_send_a_caller_without_a_session_to_sign_in(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        await make_key(s, "acme")
        page = await s.http.get("/dead-letters", params={"queue": "q"})
        api = await s.http.get("/api/jobs")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/dead-letters%3Fqueue%3Dq"
    assert api.status_code == 401


async def test_signing_in_sets_an_httponly_samesite_session_cookie_and_shows_the_tenants_jobs(
    make_settings: Any,
) -> None:
    async with stack(make_settings(), yard) as s:
        key, _ = await make_key(s, "acme", "jobs:read", "jobs:write", name="ops")
        job = {"name": "acme nightly", "actions": [{"type": "demo.noop"}]}
        await s.http.post("/api/jobs", json=job, headers=bearer(key))
        signed_in = await _sign_in(s, key, "/queues")
        cookie = signed_in.headers["set-cookie"]
        page = await s.http.get("/")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/queues"
    assert cookie.startswith("jobyard_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert page.status_code == 200 and "acme nightly" in page.text
    assert 'name="csrf-token"' in page.text and "Sign out" in page.text and "ops · acme" in page.text


async def test_session_requests_that_change_state_need_the_csrf_token(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        key, _ = await make_key(s, "acme")
        await _sign_in(s, key)
        page = (await s.http.get("/submit")).text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert csrf
        job = {"actions": [{"type": "demo.noop"}]}
        without = await s.http.post("/api/jobs", json=job)
        wrong = await s.http.post("/api/jobs", json=job, headers={"X-CSRF-Token": "guess"})
        right = await s.http.post("/api/jobs", json=job, headers={"X-CSRF-Token": csrf.group(1)})
        reading = await s.http.get(f"/api/jobs/{right.json()['id']}")
    assert without.status_code == 403 and "CSRF" in without.json()["detail"]
    assert wrong.status_code == 403 and right.status_code == 202 and reading.status_code == 200


async def test_sign_in_refuses_a_bad_key_a_key_without_read_scope_and_a_forged_form(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        writer, _ = await make_key(s, "acme", "jobs:write")
        bad = await _sign_in(s, "jy_000000000000_" + "x" * 43)
        no_read = await _sign_in(s, writer)
        forged = await s.http.post("/login", data={"key": writer, "csrf_token": "made-up"})
        external = await _sign_in(s, (await make_key(s, "acme", "jobs:read"))[0], "//evil.example/")
    assert bad.status_code == 401 and "not valid" in bad.text
    assert "jobyard_session" not in bad.headers.get("set-cookie", "")
    assert no_read.status_code == 403 and forged.status_code == 403
    assert external.status_code == 303 and external.headers["location"] == "/"  # no open redirect


async def test_revoking_the_key_ends_its_sessions_at_once(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        await make_key(s, "acme", "admin")  # revoking the last key would reopen a loopback API (JOBYARD_AUTH=auto)
        key, key_id = await make_key(s, "acme", "jobs:read")
        await _sign_in(s, key)
        before = await s.http.get("/")
        await s.runtime.keys.revoke(key_id)
        after = await s.http.get("/")
    assert before.status_code == 200 and after.status_code == 303


async def test_signing_out_ends_the_session_and_needs_its_csrf_token(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        key, _ = await make_key(s, "acme", "jobs:read")
        await _sign_in(s, key)
        session_id = s.http.cookies["jobyard_session"]
        token = _form_token((await s.http.get("/")).text)
        forged = await s.http.post("/logout", data={"csrf_token": "nope"})
        still_in = await s.http.get("/")
        out = await s.http.post("/logout", data={"csrf_token": token})
        s.http.cookies.set("jobyard_session", session_id)  # replaying the old cookie does not help
        replayed = await s.http.get("/")
    assert forged.status_code == 403 and still_in.status_code == 200
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert replayed.status_code == 303


async def test_without_keys_the_sign_in_page_goes_straight_to_the_dashboard(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        response = await s.http.get("/login", params={"next": "/workers"})
    assert response.status_code == 303 and response.headers["location"] == "/workers"
