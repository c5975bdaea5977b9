"""`jobyard keys …` against an embedded store; `jobyard api` and `dev` refusing to start: a non-loopback bind
without keys, an app that does not load, an unreachable database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port


def _jobyard(
    tmp_path: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
    environ.update(
        JOBYARD_DATABASE_URL=f"sqlite:///{tmp_path / 'jobyard.db'}",
        JOBYARD_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jobyard", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_keys_are_created_once_listed_without_the_secret_and_revoked(tmp_path: Path) -> None:
    assert _jobyard(tmp_path, "migrate").returncode == 0
    created = _jobyard(
        tmp_path, "keys", "create", "--tenant", "acme", "--scope", "jobs:read,jobs:write", "--name", "ci"
    )
    key = created.stdout.strip()
    listed = _jobyard(tmp_path, "keys", "list", "--tenant", "acme")
    prefix = key.split("_")[1]
    revoked = _jobyard(tmp_path, "keys", "revoke", prefix)
    again = _jobyard(tmp_path, "keys", "revoke", prefix)
    bad_scope = _jobyard(tmp_path, "keys", "create", "--tenant", "acme", "--scope", "root")
    listed_after = _jobyard(tmp_path, "keys", "list")
    assert created.returncode == 0 and key.startswith("jy_") and "not shown again" in created.stderr
    assert f"jy_{prefix}_…" in listed.stdout and key not in listed.stdout and "jobs:read,jobs:write" in listed.stdout
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert again.returncode == 1 and "already revoked" in again.stderr
    assert bad_scope.returncode == 2 and "unknown scope(s) root" in bad_scope.stderr
    assert "revoked 20" in listed_after.stdout


def test_the_api_refuses_to_bind_a_non_loopback_address_without_keys(tmp_path: Path) -> None:
    assert _jobyard(tmp_path, "migrate").returncode == 0
    refused = _jobyard(tmp_path, "api", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert refused.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in refused.stderr


def test_dev_refuses_too_on_a_fresh_store(tmp_path: Path) -> None:
    refused = _jobyard(tmp_path, "dev", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0" in refused.stderr


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        (
            "JOBYARD_APP",
            "no_such_module:yard",
            "JOBYARD_APP='no_such_module:yard': cannot import 'no_such_module': No module named 'no_such_module'",
        ),
        (
            "JOBYARD_DATABASE_URL",
            "postgresql://postgres@127.0.0.1:{port}/nothing",  # nothing listens there
            "the database is unreachable; check JOBYARD_DATABASE_URL and that the server is running",
        ),
    ],
    ids=["an app that does not load", "an unreachable database"],
)
def test_a_start_that_cannot_succeed_is_one_line_before_any_banner(
    tmp_path: Path, setting: str, value: str, error: str
) -> None:
    env = {setting: value.format(port=free_port())}
    for command in ("dev", "api"):
        refused = _jobyard(tmp_path, command, "--port", str(free_port()), timeout=60, env=env)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines() == [f"error: {error}"]
        assert "jobyard dev:" not in refused.stdout
