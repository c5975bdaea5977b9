"""Opening a Redis connection costs a socket and a handshake, not a parse of redis-py's package metadata.

A pool opens connections exactly when a burst of requests needs them; redis-py 8 worked out its own version for
each one (0.77 ms of CPU on the development machine), which lengthened every burst that made the pool grow.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.utils

from jobyard.kv.redis import RedisKV
from tests import services


async def test_new_connections_do_not_look_up_the_library_version(monkeypatch: pytest.MonkeyPatch) -> None:
    services.require("redis")
    pytest.importorskip("redis.driver_info", reason="redis-py without DriverInfo reads its version once, at import")
    kv = RedisKV(services.REDIS_URL)
    lookups: list[str] = []
    real = redis.utils.get_lib_version

    def counted() -> str:
        lookups.append("lookup")
        return str(real())

    monkeypatch.setattr(redis.utils, "get_lib_version", counted)
    pool = kv._client.connection_pool
    connections = [await pool.get_connection() for _ in range(5)]  # five at once: the pool opens five
    try:
        for connection in connections:
            await connection.send_command("PING")
            assert await connection.read_response() in (b"PONG", "PONG")
    finally:
        for connection in connections:
            await pool.release(connection)
        await kv.close()
    assert lookups == []


async def test_connections_name_jobyard_to_redis() -> None:
    services.require("redis")
    pytest.importorskip("redis.driver_info", reason="redis-py without DriverInfo names only itself")
    kv = RedisKV(services.REDIS_URL)
    try:
        info = kv._client.connection_pool.connection_kwargs["driver_info"]
        assert "jobyard_v" in str(info.formatted_name)
    finally:
        await kv.close()


async def test_subscriptions_speak_resp2() -> None:
    """Over RESP3, redis-py 8 formats every pub/sub message for a debug log, even with the log off (reading a 5 KB
    batch of status events took 50-80 µs on the development machine, against 20-30 over RESP2): subscriptions use
    RESP2."""
    services.require("redis")
    kv = RedisKV(services.REDIS_URL)

    async def subscribed_ids() -> dict[str, str]:
        found = {}
        for client in await kv._client.client_list(_type="pubsub"):  # (this test's only subscriber is new)
            found[str(client["id"])] = str(client.get("resp"))
        return found

    before = await subscribed_ids()
    received: list[bytes] = []

    async def listen() -> None:
        async for _channel, raw in kv.subscribe("jobyard:test:resp"):
            received.append(raw)
            return

    task = asyncio.create_task(listen())
    try:
        for _ in range(50):  # until the subscription's connection shows up
            new = {i: resp for i, resp in (await subscribed_ids()).items() if i not in before}
            if new:
                break
            await asyncio.sleep(0.05)
        assert list(new.values()) == ["2"]
        await kv.publish("jobyard:test:resp", b"hello")
        await asyncio.wait_for(task, 5)
        assert received == [b"hello"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kv.close()
