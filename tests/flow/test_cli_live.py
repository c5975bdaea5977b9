"""The terminal's live views against a served API: `status --follow`, `submit --wait`, `top --once`."""

from __future__ import annotations

import asyncio
from typing import Any

from typer.testing import CliRunner

from jobyard.cli import app
from jobyard.demo import yard
from tests.harness import stack
from tests.liveclient import serve


async def invoke(*args: str) -> Any:
    # The CLI is synchronous: run it in a thread so this loop keeps serving the API it talks to.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_status_follow_shows_every_action_and_the_final_status(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        job_id = await s.submit([{"type": "demo.sleep", "payload": {"seconds": 0.3}}, {"type": "demo.noop"}])
        result = await invoke("status", job_id, "--follow", "--url", url, "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "demo.sleep" in result.output and "demo.noop" in result.output
    assert f"job {job_id}: succeeded" in result.output


async def test_submit_wait_fails_when_the_job_fails(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        result = await invoke("submit", "demo.fail", "--wait", "--url", url, "--timeout", "60")
    assert result.exit_code == 1 and "failed" in result.output


async def test_top_once_lists_queues_and_workers(make_settings: Any) -> None:
    async with stack(make_settings(presence_interval=0.1), yard) as s, serve(s.app) as url:
        await s.wait(await s.submit([{"type": "demo.noop"}]))
        for _ in range(200):  # until the first presence beat arrived
            if (await s.http.get("/api/workers")).json()["workers"]:
                break
            await asyncio.sleep(0.05)
        result = await invoke("top", "--once", "--url", url)
    assert result.exit_code == 0, result.output
    assert "default" in result.output and "test-worker-0" in result.output
