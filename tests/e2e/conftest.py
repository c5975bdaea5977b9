"""Browser tests: a real `jobyard dev` process and the system Chromium driven by Playwright.

Locally a missing Chromium or Playwright skips with the reason; in CI (CI=true) it fails the run.
Screenshots go to ``test-artifacts/e2e/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import services
from tests.processes import ROOT, free_port

CHROMIUM = os.environ.get("JOBYARD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    problem = None
    if importlib.util.find_spec("playwright") is None:
        problem = "the playwright package is not installed (pip install -e '.[dev]')"
    elif not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set JOBYARD_CHROMIUM)"
    if problem is None:
        return
    if services.IN_CI:
        pytest.fail(f"{problem}; CI requires the browser tests", pytrace=False)
    pytest.skip(f"{problem} (set CI=true to make this a failure)")


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `jobyard dev` on the embedded defaults with the e2e actions; its base URL."""
    require_browser()
    workdir = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {
        **os.environ,
        "JOBYARD_APP": "tests.e2e.app:yard",
        "JOBYARD_DATABASE_URL": f"sqlite:///{workdir / 'jobyard.db'}",
        "JOBYARD_BROKER_URL": "memory://",
        "JOBYARD_REDIS_URL": "memory://",
        "JOBYARD_PORT": str(port),
        "JOBYARD_PRESENCE_INTERVAL": "1",
        "JOBYARD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    with open(workdir / "dev.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jobyard", "dev"], env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"jobyard dev did not start: {(workdir / 'dev.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(dashboard: str) -> Iterator[Any]:
    # Module scope, not session: the sync API keeps an event loop running in this thread until it exits,
    # and the async tests collected after this module need the thread to themselves.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(params=["light", "dark"])
def page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme=request.param)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    scheme = (page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") and "dark") or "light"
    path = ARTIFACTS / f"{name}-{scheme}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
