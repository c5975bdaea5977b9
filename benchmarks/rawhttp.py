"""A minimal keep-alive HTTP/1.1 client for load generation: a few microseconds of client CPU per request.

The benchmark measures the server, so the client must cost as little as possible on a shared 2-core box;
it speaks only what the jobyard API answers (Content-Length bodies, no chunking, no redirects).
"""

from __future__ import annotations

import asyncio
import contextlib


class HttpError(Exception):
    """The server answered with something this client does not understand, or closed the connection."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class RawHttpPool:
    """Up to ``size`` keep-alive connections to one host; requests wait for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self._free: asyncio.Queue[_Connection] = asyncio.Queue()
        self._opened = 0
        self._slots = asyncio.Semaphore(size)
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _take(self, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection and whether it was reused (an idle one may have been closed by the server meanwhile)."""
        if not fresh and not self._free.empty():
            return self._free.get_nowait(), True
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._opened += 1
        return _Connection(reader, writer), False

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        head += b"\r\n"
        async with self._slots:
            conn, reused = await self._take()
            try:
                result = await conn.request(head, body)
            except (HttpError, ConnectionError):
                conn.close()
                if not reused:
                    raise
                # The server closed an idle keep-alive connection before reading the request: send it again.
                conn, _ = await self._take(fresh=True)
                try:
                    result = await conn.request(head, body)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                conn.close()
                raise
            self._free.put_nowait(conn)
            return result

    async def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


class RoundRobinHttp:
    """Several API processes, as behind a load balancer: each request goes to the next one's pool in turn."""

    def __init__(self, pools: list[RawHttpPool]) -> None:
        if not pools:
            raise ValueError("at least one pool")
        self.pools = pools
        self._next = 0

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        pool = self.pools[self._next]
        self._next = (self._next + 1) % len(self.pools)
        return await pool.request(method, path, body)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()
