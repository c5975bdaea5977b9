"""A minimal HTTP/1.1 keep-alive client for load tests: a few microseconds per request, so the client
does not dominate the measurement the way a full-featured client does on a 2-core machine."""

from __future__ import annotations

import asyncio


async def post_many(
    port: int, path: str, body: bytes, count: int, connections: int
) -> list[tuple[int, dict[str, str]]]:
    """POST ``body`` ``count`` times over ``connections`` kept-alive connections; (status, headers) each."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: list[tuple[int, dict[str, str]]] = []
    per_connection = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    async def run(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                results.append((int(lines[0].split()[1]), headers))
        finally:
            writer.close()

    await asyncio.gather(*(run(n) for n in per_connection if n))
    return results
