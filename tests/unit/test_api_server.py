"""The API's HTTP protocol writes a response's head and body together (``jobyard.api.server``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobyard.api.server import HOLD_BELOW, JoinedWritesProtocol, JoiningTransport
from tests.liveclient import serve


class _Transport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:  # one call, as uvloop's writev
        self.writes.append(b"".join(list_of_data))

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def _turn() -> None:
    """Let the event loop run what is ready now (the transport's scheduled flush)."""
    await asyncio.sleep(0)


async def test_a_head_and_the_body_after_it_go_out_in_one_write() -> None:
    real = _Transport()
    joining = JoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.writes == []  # held for the body
    joining.write(b"{}")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]  # at once, not on the next turn
    await _turn()
    assert len(real.writes) == 1


async def test_a_head_nothing_follows_goes_out_on_the_next_turn() -> None:
    real = _Transport()
    joining = JoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream's head, no chunk yet
    assert real.writes == []
    await _turn()
    assert real.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    joining.write(bytearray(b"HTTP/1.1 100 Continue\r\n\r\n"))  # bytes-like too
    joining.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    joining.write(b"HTTP/1.1 200 OK\r\n\r\n")  # held after the pair went out, flushed by the turn already due
    await _turn()
    assert real.writes[1:] == [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ]


async def test_writes_that_are_not_a_head_go_out_at_once() -> None:
    """A stream's chunks and events, WebSocket frames: as uvicorn wrote them, with no turn of delay."""
    real = _Transport()
    joining = JoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(b"1a\r\ndata: one\n\n\r\n")
    joining.write(memoryview(b"\x81\x05hello"))
    assert real.writes == [b"1a\r\ndata: one\n\n\r\n", b"\x81\x05hello"]


async def test_large_writes_are_never_held() -> None:
    real = _Transport()
    joining = JoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    big_head = b"HTTP/1.1 200 OK\r\nx-padding: " + b"x" * HOLD_BELOW + b"\r\n\r\n"
    joining.write(big_head)
    assert real.writes == [big_head]  # flow control sees it at once
    big = b"x" * HOLD_BELOW
    joining.write(b"HTTP/1.1 200 OK\r\n\r\n")
    joining.write(big)
    assert real.writes == [big_head, b"HTTP/1.1 200 OK\r\n\r\n" + big]  # one call (a writev on uvloop)
    joining.writelines([b"HTTP/", b"1.1 200 OK\r\n\r\n"])
    await _turn()
    assert real.writes[-1] == b"HTTP/1.1 200 OK\r\n\r\n"


async def test_closing_writes_what_is_held_first_and_aborting_drops_it() -> None:
    real = _Transport()
    joining = JoiningTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joining.write(b"HTTP/1.1 500 last words")
    assert joining.get_write_buffer_size() == 7 + len(b"HTTP/1.1 500 last words")
    joining.close()
    assert real.writes == [b"HTTP/1.1 500 last words"]
    assert real.events == ["close"]
    joining.write(b"HTTP/1.1 200 eof next")
    joining.write_eof()
    assert real.writes[-1] == b"HTTP/1.1 200 eof next"
    joining.write(b"HTTP/1.1 200 never sent")
    joining.abort()
    await _turn()
    assert real.writes == [b"HTTP/1.1 500 last words", b"HTTP/1.1 200 eof next"]
    assert real.events == ["close", "eof", "abort"]
    joining.write(b"HTTP/1.1 200 after the connection was lost")
    real.closing = True
    await _turn()
    assert real.writes == [b"HTTP/1.1 500 last words", b"HTTP/1.1 200 eof next"]  # a closed socket is not written to
    # the rest is the real transport's
    assert joining.is_closing() is True
    assert joining.get_extra_info("peername") == ("127.0.0.1", 1)


class _CountingTransport:
    """Counts the writes that reach the real transport (the system calls) on a served connection."""

    counted: list[int] = []  # writes per connection, in the order the connections were made

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._index = len(self.counted)
        self.counted.append(0)

    def write(self, data: bytes) -> None:
        self.counted[self._index] += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _counting(protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
    class Counting(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_CountingTransport(transport))

    return Counting


_release_chunk: list[asyncio.Event] = []  # the event of the test that is running (each test has a loop of its own)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/stream":  # a head, then a chunk that comes later
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await _release_chunk[-1].wait()
        await send({"type": "http.response.body", "body": b"late chunk", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"status":"running"}'
    if scope["path"] == "/echo":  # the request's body, read as it comes
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _served(protocol: type[HttpToolsProtocol]) -> AsyncIterator[int]:
    async with serve(_app, http=protocol) as url:
        yield int(url.rsplit(":", 1)[1])


async def _get(port: int, path: str, reader_writer: Any = None) -> tuple[bytes, Any]:
    reader, writer = reader_writer or await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    return head + await reader.readexactly(length), (reader, writer)


@pytest.mark.parametrize(("protocol", "writes"), [(JoinedWritesProtocol, 1), (HttpToolsProtocol, 2)])
async def test_a_served_json_answer_is_one_write(protocol: type[HttpToolsProtocol], writes: int) -> None:
    """Served by uvicorn: one system call per answer, where uvicorn's own protocol makes two (the control)."""
    _CountingTransport.counted = []
    async with _served(_counting(protocol)) as port:
        answer, conn = await _get(port, "/status")
        again, conn = await _get(port, "/status", conn)  # the same keep-alive connection
        conn[1].close()
    assert answer.endswith(b'{"status":"running"}') and answer == again
    assert _CountingTransport.counted == [2 * writes]


async def test_a_streamed_head_is_not_held_for_a_late_chunk() -> None:
    release_chunk = asyncio.Event()
    _release_chunk.append(release_chunk)
    async with _served(JoinedWritesProtocol) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before the chunk exists
        assert head.startswith(b"HTTP/1.1 200")
        release_chunk.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert b"late chunk" in rest
        writer.close()


async def test_pipelined_requests_and_an_expected_continue() -> None:
    async with _served(JoinedWritesProtocol) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n" * 2)  # two requests in one write
        for _ in range(2):  # two whole answers, in order
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(20) == b'{"status":"running"}'
        # A client that sends its body only once asked for it: the small "100 Continue" is not held back.
        writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
