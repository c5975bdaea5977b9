"""Who is calling, for every HTTP request and WebSocket: an API key, a dashboard session, or nobody.

The policy (``JOBYARD_AUTH``): ``auto`` requires a key once any exists, and until then lets an API bound to a
loopback address serve everyone as the default tenant; ``required`` always requires one; ``off`` never does.
An ``auto`` API bound to any other address with no key in the store refuses to start.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from jobyard.auth import KeyDirectory, Principal, SessionStore
from jobyard.auth.principal import OPEN_PRINCIPAL
from jobyard.config import Settings
from jobyard.errors import ConfigurationError, Forbidden, KVError, Unauthenticated

log = logging.getLogger("jobyard.auth")

SESSION_COOKIE = "jobyard_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_REQUIRED = (
    "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
    "(an admin creates keys with `jobyard keys create`)"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_policy_problem(settings: Settings, any_key: bool) -> str | None:
    """Why this API must not start with this policy, bind address and key store; None when it may."""
    if settings.auth != "auto" or any_key or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without API keys: anyone who can reach it would act as the default "
        "tenant. Create a key first (`jobyard keys create --tenant NAME --scope admin`), bind a loopback address "
        "(--host 127.0.0.1), or set JOBYARD_AUTH=off if a gateway in front of jobyard authenticates callers"
    )


async def check_auth_policy(settings: Settings, keys: KeyDirectory) -> None:
    """At start-up: raise ``ConfigurationError`` when the policy forbids serving; warn where it is risky."""
    await keys.forget_cached_state()
    any_key = await keys.any_active()
    problem = auth_policy_problem(settings, any_key)
    if problem is not None:
        raise ConfigurationError(problem)
    if settings.auth == "off" and not is_loopback(settings.host):
        log.warning("JOBYARD_AUTH=off on %s: every caller acts as the default tenant, with every scope", settings.host)
    elif settings.auth == "required" and not any_key:
        log.warning("JOBYARD_AUTH=required and no API key exists yet: create one with `jobyard keys create`")


def presented_key(conn: HTTPConnection) -> str | None:
    authorization = conn.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
        return value.strip()
    return conn.headers.get("x-api-key")


class Authenticator:
    def __init__(self, settings: Settings, keys: KeyDirectory, sessions: SessionStore) -> None:
        self.mode = settings.auth
        self.loopback = is_loopback(settings.host)
        self.keys = keys
        self.sessions = sessions

    async def serves_without_keys(self) -> bool:
        if self.mode == "off":
            return True
        if self.mode == "required" or not self.loopback:
            return False
        return not await self.keys.any_active()

    async def resolve(self, conn: HTTPConnection) -> Principal:
        """The caller, or ``Unauthenticated``; a session's unsafe request without its CSRF token is ``Forbidden``."""
        if self.mode == "off":
            return OPEN_PRINCIPAL
        key = presented_key(conn)
        if key is not None:
            return await self.keys.authenticate(key)
        session_id = conn.cookies.get(SESSION_COOKIE)
        if session_id:
            principal = await self.from_session(session_id)
            if principal is not None:
                _check_cross_site(conn, principal)
                return principal
        if await self.serves_without_keys():
            return OPEN_PRINCIPAL
        raise Unauthenticated(KEY_REQUIRED)

    async def from_session(self, session_id: str) -> Principal | None:
        """The session's caller while the session lives and its key is not revoked."""
        try:
            session = await self.sessions.get(session_id)
        except KVError as exc:
            log.warning("dashboard sessions are unavailable (%s); sign-in needs Redis", exc)
            return None
        if session is None:
            return None
        principal = await self.keys.principal_for_prefix(session.key_prefix, presented_hash=None)
        if principal is None:
            return None
        return dataclasses.replace(principal, via="session", csrf_token=session.csrf_token)


def _check_cross_site(conn: HTTPConnection, principal: Principal) -> None:
    """Cookie-authenticated requests: unsafe methods must echo the session's CSRF token; WebSockets be same-origin."""
    if conn.scope["type"] == "websocket":
        origin = conn.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != conn.headers.get("host"):
            raise Forbidden(f"cross-origin WebSocket from {origin} refused")
        return
    if conn.scope.get("method") not in UNSAFE_METHODS:
        return
    sent = conn.headers.get(CSRF_HEADER.lower(), "")
    if not principal.csrf_token or not hmac.compare_digest(sent.encode(), principal.csrf_token.encode()):
        raise Forbidden(f"missing or wrong CSRF token: a signed-in dashboard sends its {CSRF_HEADER} header")
