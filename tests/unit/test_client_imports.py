"""A request through jobyard's client looks up no module: a failed import repeated per request costs CPU each time."""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from jobyard import AsyncClient


class _Recorder(importlib.abc.MetaPathFinder):
    """Sees every import of a module not already loaded (a failed one included), and leaves it to the others."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        self.names.append(fullname)
        return None


async def _stub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request as the API answers a submission."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            body = b'{"id":"0190c3b4-0000-7000-8000-000000000000"}'
            writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n")
            writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def test_submitting_over_a_real_connection_imports_nothing() -> None:
    server = await asyncio.start_server(_stub, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = _Recorder()
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}") as client:
            await client.submit([{"type": "demo.noop"}])  # the first request may load what it needs
            sys.meta_path.insert(0, recorder)
            try:
                ids = [await client.submit([{"type": "demo.noop"}]) for _ in range(3)]
                ids += await asyncio.gather(*(client.submit([{"type": "demo.noop"}]) for _ in range(3)))
            finally:
                sys.meta_path.remove(recorder)
    finally:
        server.close()
        await server.wait_closed()
    assert len(ids) == 6
    assert recorder.names == []  # e.g. ["sniffio", "sniffio", ...] when httpcore's per-request import fails
