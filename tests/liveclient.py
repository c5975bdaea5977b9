"""Test helpers for live streams: serve an app on a real port (SSE and WebSocket need one) and read SSE events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from jobyard.api.server import JoinedWritesProtocol


@asynccontextmanager
async def serve(app: Any, http: type[asyncio.Protocol] = JoinedWritesProtocol) -> AsyncIterator[str]:
    """Serve ``app`` (whose lifespan the caller already runs) on a free port; yields its base URL.

    ``http`` is uvicorn's HTTP protocol: by default the one `jobyard api` serves with."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        http=http,
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent | str]:
    """Parse an SSE response: yields events, and comment lines (heartbeats) as plain strings."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield line
            continue
        if line == "":
            if "data" in fields:
                yield SseEvent(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
