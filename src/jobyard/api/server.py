"""The API's HTTP server: uvicorn's httptools protocol, with a response's head and body written to the socket together.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``, and its body when
the app sends ``http.response.body``: two writes, so two system calls and two TCP segments for every small JSON
answer, and a client that wakes up twice to read it. ``JoinedWritesProtocol`` is uvicorn's own protocol given a
transport (``JoiningTransport``) that holds back a response's head (a write that starts with ``HTTP/``, under
``HOLD_BELOW`` bytes) until the next write: the head then goes out with the body, in one call, at the moment the
body is written. Measured with ``benchmarks.run`` (``benchmarks/RESULTS.md``, "a response in one write"), ten
alternating pairs: status reads at 1,000 a second had a lower p50 in eight (by up to 0.1 ms) and a lower or equal
p99 in nine; with one job a request, seven of eight moved more actions a second (median about 3 %).

Every other write goes out at once, as uvicorn wrote it: a stream's chunks and events, WebSocket frames, large
bodies (so uvicorn's flow control sees them as before). Holding those would gain nothing and would make each wait
for the loop's next turn, behind the other streams' writes; with this rule the commit-to-SSE-client latency of
``benchmarks.stream_latency`` is unchanged. A head that nothing follows within the same step of the event loop (a
streamed response whose first chunk is not ready yet, ``100 Continue``) goes out on the loop's next turn. Closing
the transport writes what is held first; aborting it drops it, as it drops the kernel's buffer, and so does losing
the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_BELOW = 16 * 1024  # bytes: a larger head goes out at once (nothing to gain, and flow control sees it)


class JoiningTransport:
    """A transport's stand-in that joins a response's head with the write after it (see the module's docstring)."""

    __slots__ = ("_flush_due", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_due = False  # a call of ``_flush`` is scheduled

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < HOLD_BELOW:
                self._transport.write(b"".join((held, data)))
            else:  # a large body is not copied to join it (uvloop writes the two buffers in one call)
                self._transport.writelines((held, data))
        elif len(data) >= HOLD_BELOW or data[:5] != b"HTTP/":
            self._transport.write(data)
        else:
            self._held = bytes(data)
            if not self._flush_due:
                self._flush_due = True
                self._loop.call_soon(self._flush)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        self._flush_due = False
        held, self._held = self._held, None
        # uvicorn never writes to a lost connection; what was held when it was lost is dropped with it
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a ``JoiningTransport``: pass it as ``uvicorn.Config(http=...)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(JoiningTransport(transport, self.loop))  # type: ignore[arg-type]
