"""Request dependencies: the runtime, the app's registry, and the caller (tenant and scopes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

from jobyard import jsonutil
from jobyard.api.auth import Authenticator
from jobyard.auth import ADMIN, JOBS_READ, JOBS_WRITE, Principal
from jobyard.auth.principal import DEFAULT_TENANT
from jobyard.errors import Forbidden
from jobyard.runtime import Runtime
from jobyard.sdk import Yard

__all__ = [
    "DEFAULT_TENANT",
    "SECURITY",
    "SECURITY_SCHEMES",
    "Admin",
    "Reader",
    "Writer",
    "json_response",
    "needs_key",
    "principal",
    "require",
    "runtime",
    "tenant",
    "yard",
]

# How a caller presents its API key, for the OpenAPI schema (the "Authorize" button of /docs); the credentials
# are read by Authenticator. Declared in the schema only (see ``needs_key``): as FastAPI ``Security``
# dependencies they were also run on every request, two more dependency solves for nothing.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {"type": "http", "description": "an API key: Authorization: Bearer jy_…", "scheme": "bearer"},
    "APIKeyHeader": {"type": "apiKey", "description": "an API key, as a header", "in": "header", "name": "X-API-Key"},
}
SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
_SCOPE_CHECKS: dict[Callable[..., Awaitable[Principal]], str] = {}


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
# which costs a thread hop per dependency per request on the hottest endpoints.


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def yard(request: Request) -> Yard:
    y: Yard = request.app.state.yard
    return y


async def principal(conn: HTTPConnection) -> Principal:
    """The caller of this request or WebSocket (resolved once per connection)."""
    found: Principal | None = getattr(conn.state, "principal", None)
    if found is None:
        authenticator: Authenticator = conn.app.state.auth
        found = await authenticator.resolve(conn)
        conn.state.principal = found
    return found


async def tenant(conn: HTTPConnection) -> str:
    """The caller's tenant (any authenticated caller; use ``require`` where a scope is needed)."""
    return (await principal(conn)).tenant


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers whose key grants ``scope`` (``admin`` grants every scope)."""

    async def check(conn: HTTPConnection) -> Principal:
        caller = await principal(conn)
        if not caller.allows(scope):
            have = ", ".join(sorted(caller.scopes)) or "none"
            raise Forbidden(f"this API key lacks the {scope!r} scope (it has: {have})")
        return caller

    check.__name__ = f"require_{scope.replace(':', '_')}"
    _SCOPE_CHECKS[check] = scope
    return check


def needs_key(dependant: Dependant) -> bool:
    """Whether a route (its dependency tree) checks an API key's scope: its operation lists ``SECURITY``."""
    return dependant.call in _SCOPE_CHECKS or any(needs_key(d) for d in dependant.dependencies)


# One dependency per scope, shared by every route (FastAPI caches a dependency per request by its callable).
Reader = Annotated[Principal, Depends(require(JOBS_READ))]
Writer = Annotated[Principal, Depends(require(JOBS_WRITE))]
Admin = Annotated[Principal, Depends(require(ADMIN))]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonutil.dumps(content), status_code=status_code, media_type="application/json", headers=headers)
