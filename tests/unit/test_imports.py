"""What a worker process loads: never the HTTP client library.

A worker's resident memory is mostly the modules it imports (issue 7 asks for under 100 MB); httpx and what it
pulls in were about 6 MB of it, needed only by the CLI's client commands, the SDK's Client and the relay's
webhook sender.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

WORKER_MODULES = "jobyard.cli, jobyard.runtime, jobyard.worker, jobyard.broker.rabbitmq, jobyard.kv.redis"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


def test_a_worker_does_not_load_httpx() -> None:
    loaded = _loaded_after(f"import {WORKER_MODULES}")
    assert "jobyard.worker" in loaded
    assert "httpx" not in loaded
    assert "jobyard.client" not in loaded


def test_the_clients_still_load_from_the_package() -> None:
    loaded = _loaded_after("from jobyard import AsyncClient, Client\nassert Client.__name__ == 'Client'")
    assert "httpx" in loaded


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    import jobyard

    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = jobyard.NoSuchThing  # type: ignore[attr-defined]
