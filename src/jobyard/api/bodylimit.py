"""Pure ASGI middleware refusing request bodies over ``JOBYARD_MAX_BODY_BYTES`` with a 413 naming the limit.

A declared ``Content-Length`` is checked before anything is read (the server holds the body to that length); a
body without one (chunked) is read up to the limit, then handed on, so an endless stream cannot exhaust memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobyard import jsonutil


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size > self.max_bytes:
                await self._refuse(send, f"request body of {size} bytes is larger than")
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        total = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, "request body is larger than")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        body = jsonutil.dumps(
            {"detail": f"{what} the limit of {self.max_bytes} bytes (JOBYARD_MAX_BODY_BYTES); send less per request"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
