"""A request through jobyard's client looks up no module: a failed import repeated per request costs CPU each time."""

from __future__ import annotations

import asyncio
import contextlib
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


class _Stub:
    """A server answering every request as the API answers a submission; ``close`` ends each of its connections."""

    def __init__(self) -> None:
        self.handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append((task, writer))
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
            pass  # the client hung up
        finally:
            writer.close()

    async def close(self) -> None:
        for _, writer in self.handlers:
            writer.close()  # its reader sees the end: the handler returns
        await asyncio.wait_for(asyncio.gather(*(task for task, _ in self.handlers)), 5)
        for _, writer in self.handlers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_submitting_over_a_real_connection_imports_nothing() -> None:
    stub = _Stub()
    server = await asyncio.start_server(stub.handle, "127.0.0.1", 0)
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
        await stub.close()
        await server.wait_closed()
    assert len(ids) == 6
    assert recorder.names == []  # e.g. ["sniffio", "sniffio", ...] when httpcore's per-request import fails
