"""Where the real servers are, and whether they answer. In CI (CI=true) a missing server fails the run."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

PG_ADMIN_URL = os.environ.get("JOBYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("JOBYARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("JOBYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# Test databases are created and dropped by the tests; a prefix lets two checkouts run their suites side by side.
PG_DB_PREFIX = os.environ.get("JOBYARD_TEST_DB_PREFIX", "jobyard")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str) -> None:
    url, port = {"postgresql": (PG_ADMIN_URL, 5432), "rabbitmq": (AMQP_URL, 5672), "redis": (REDIS_URL, 6379)}[name]
    if _answers(url, port):
        return
    message = f"{name} is not reachable at {urlparse(url).netloc.split('@')[-1]}"
    if IN_CI:
        pytest.fail(f"{message}; CI requires every integration server", pytrace=False)
    pytest.skip(f"{message} (set CI=true to make this a failure)")


def pg_url(database: str) -> str:
    parsed = urlparse(PG_ADMIN_URL)
    return parsed._replace(path=f"/{database}").geturl()
