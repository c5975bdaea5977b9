"""The two hottest requests served below FastAPI: ``GET /api/jobs/{id}/status`` and ``POST /api/jobs``.

Clients poll a job's status many times a second and submit jobs in bursts. For these two requests, matching every
route's pattern, FastAPI's dependency solving and its request plumbing cost more CPU than the work itself (in
process: ~80 µs for a cached status read served here against ~340 µs through the route). This middleware sits
inside the rate limiter and the body limit, so both still apply, and runs the routes' own code
(``routes_jobs.status_body`` and ``routes_jobs.accept_job``) with the same authentication and scope checks.

Whatever it is not sure to answer exactly as the route would, it hands to the route, untouched: an id that is not a
UUID, no key or a key without the scope, a body that does not validate, an ``Idempotency-Key``, a content type
other than JSON, an unknown job. Those requests pay the check twice; nothing else changes for them. Once a
submission is valid and its caller allowed, an error while storing it (a quota, an unknown action type, the store
down) is answered here by the app's own exception handler for it, never retried through the route (which could
charge a quota twice). The routes stay as they are and keep both operations in the OpenAPI schema.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import pydantic
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobyard.api import deps, schemas
from jobyard.api.routes_jobs import accept_job, status_body
from jobyard.auth import JOBS_READ, JOBS_WRITE
from jobyard.errors import JobyardError

_STATUS = re.compile(r"/api/jobs/([0-9A-Fa-f-]{32,36})/status")
_JOBS = "/api/jobs"


class FastPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            method = scope["method"]
            if method == "GET" and (match := _STATUS.fullmatch(path)) is not None:
                body = await self._status(scope, match.group(1))
                if body is not None:
                    await Response(body, media_type="application/json")(scope, receive, send)
                    return
            elif method == "POST" and path == _JOBS and _plain_json(scope):
                await self._submit(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _status(scope: Scope, raw_id: str) -> bytes | None:
        """The status body, or None to let the route answer (whatever the reason)."""
        try:
            job_id = UUID(raw_id)
        except ValueError:
            return None
        conn = HTTPConnection(scope)
        try:
            caller = await deps.principal(conn)
            if not caller.allows(JOBS_READ):
                return None
            return await status_body(conn.app.state.runtime, caller.tenant, job_id)
        except JobyardError:
            return None

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[Message] = []
        chunks: list[bytes] = []
        while True:  # the body limit outside bounds this
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        response = await self._accept(scope, b"".join(chunks))
        if response is None:
            await self.app(scope, replay, send)
        else:
            await response(scope, replay, send)

    @staticmethod
    async def _accept(scope: Scope, raw: bytes) -> Response | None:
        """The route's answer to a valid submission of an allowed caller; None to let the route answer."""
        try:
            # The standard library's parser, as FastAPI's: orjson reads some JSON differently (integers beyond
            # 64 bits become floats), and the validation must see exactly what the route would.
            body = schemas.JobIn.model_validate(json.loads(raw))
        except (ValueError, pydantic.ValidationError):
            return None
        conn = HTTPConnection(scope)
        try:
            caller = await deps.principal(conn)
        except JobyardError:
            return None
        if not caller.allows(JOBS_WRITE):
            return None
        app = conn.app
        try:
            return await accept_job(app.state.runtime, app.state.yard, caller, body, None)
        except Exception as exc:
            handler = _handler_for(app.exception_handlers, exc)
            if handler is None:
                raise
            answer = handler(Request(scope), exc)
            return await answer if inspect.isawaitable(answer) else answer


def _plain_json(scope: Scope) -> bool:
    """A JSON body without an ``Idempotency-Key`` (that header's validation and replay stay the route's)."""
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return False
        if name == b"content-type":
            content_type = value
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _handler_for(handlers: dict[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Awaitable[Response]] | None:
    """The app's exception handler for ``exc``: the one of its nearest class, as Starlette looks it up."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
