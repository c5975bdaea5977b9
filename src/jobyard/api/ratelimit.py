"""Pure ASGI middleware applying the shared rate limits to ``/api`` routes, grouped as submit, read, control."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobyard import jsonutil
from jobyard.kv.ratelimit import RateLimiter, headers


def route_group(method: str, path: str) -> str | None:
    if not path.startswith("/api/"):
        return None
    if method == "POST" and path in ("/api/jobs", "/api/jobs:batch"):
        return "submit"
    if method in ("GET", "HEAD"):
        return "read"
    return "control"


def caller_identity(scope: Scope) -> str:
    """The API key when one is presented (hashed: never store it), else the client's address."""
    for name, value in scope.get("headers", []):
        if name in (b"authorization", b"x-api-key"):
            return "key:" + hashlib.sha256(value).hexdigest()[:24]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter_of: Any) -> None:
        self.app = app
        self._limiter_of = limiter_of  # a callable: the limiter is built in the lifespan, after this middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RateLimiter | None = self._limiter_of()
        group = route_group(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        checked = await limiter.check(group, caller_identity(scope)) if limiter and group else None
        if checked is None:
            await self.app(scope, receive, send)
            return
        limit, decision = checked
        extra = headers(limit, decision)
        if not decision.allowed:
            body = jsonutil.dumps(
                {"detail": f"rate limit of {limit.count} {group} requests per {limit.period:g}s exceeded; retry later"}
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
