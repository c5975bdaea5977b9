"""Dashboard sign-in and sign-out: an API key in, a session cookie out (httpOnly, SameSite=Lax).

The sign-in form carries a token that must match a short-lived cookie (login CSRF); signed-in pages carry the
session's CSRF token, which unsafe requests must echo (``X-CSRF-Token``, or the ``csrf_token`` form field here).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from jobyard.api.auth import SESSION_COOKIE, Authenticator
from jobyard.api.routes_pages import templates
from jobyard.auth import JOBS_READ
from jobyard.auth.principal import prefix_of
from jobyard.errors import AuthError, KVError
from jobyard.runtime import Runtime

router = APIRouter(include_in_schema=False)

LOGIN_COOKIE = "jobyard_login"
LOGIN_FORM_TTL = 600
MAX_FORM_BYTES = 4096


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or a scheme): no open redirect through sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}


def _login_page(request: Request, next_path: str, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"page": "login", "initial": "null", "csrf_token": token, "next": next_path, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=LOGIN_FORM_TTL, httponly=True, samesite="lax", secure=_https(request)
    )
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _auth(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.auth
    return authenticator


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> Any:
    if await _auth(request).serves_without_keys():
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Any:
    form = await _form(request)
    next_path = _safe_next(form.get("next"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    sent = form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _login_page(request, next_path, "The sign-in form expired; please try again.", 403)
    rt: Runtime = request.app.state.runtime
    key = form.get("key", "").strip()
    try:
        caller = await rt.keys.authenticate(key)
        if not caller.allows(JOBS_READ):
            return _login_page(request, next_path, "This key cannot read jobs (it lacks the jobs:read scope).", 403)
        session = await rt.sessions.create(prefix_of(key) or "")
    except AuthError:
        return _login_page(request, next_path, "That API key is not valid (or was revoked).", 401)
    except KVError:
        return _login_page(request, next_path, "Sessions are unavailable right now (Redis); try again shortly.", 503)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(rt.settings.session_ttl),
        httponly=True,
        samesite="lax",
        secure=_https(request),
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Any:
    form = await _form(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    rt: Runtime = request.app.state.runtime
    if session_id:
        session = await _auth(request).sessions.get(session_id)
        sent = form.get("csrf_token", "")
        if session is not None and not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            return Response("missing or wrong CSRF token", status_code=403, media_type="text/plain")
        await rt.sessions.delete(session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
