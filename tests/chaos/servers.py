"""Stop and start the real servers for the chaos tests; every helper leaves its server running."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _wait(port: int, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _answers(port) != up:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")
        await asyncio.sleep(0.2)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


async def rabbitmq_stop() -> None:
    await asyncio.to_thread(_run, "rabbitmqctl", "stop_app")
    await _wait(5672, up=False, timeout=60)


async def rabbitmq_start() -> None:
    await asyncio.to_thread(_run, "rabbitmqctl", "start_app")
    await asyncio.to_thread(_run, "rabbitmqctl", "await_startup")
    await _wait(5672, up=True, timeout=120)


def _pg_cluster() -> str:
    return sorted(os.listdir("/etc/postgresql"))[0]


async def postgres_stop() -> None:
    await asyncio.to_thread(
        _run, "pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main", "stop", "-m", "fast"
    )
    await _wait(5432, up=False, timeout=60)


async def postgres_start() -> None:
    await asyncio.to_thread(_run, "pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main", "start")
    await _wait(5432, up=True, timeout=60)


async def redis_stop() -> None:
    await asyncio.to_thread(subprocess.run, ["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=30)
    await _wait(6379, up=False, timeout=30)


async def redis_start() -> None:
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    await asyncio.to_thread(
        _run,
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
        "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
    )  # fmt: skip
    await _wait(6379, up=True, timeout=30)


async def ensure_all_running() -> None:
    """Restart whatever a failed test left stopped."""
    if not _answers(5432):
        await postgres_start()
    if not _answers(6379):
        await redis_start()
    if not _answers(5672):
        await rabbitmq_start()
