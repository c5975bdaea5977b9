"""The terminal against a served API: `jobs`, `status --follow`, `submit --wait`, `top --once`, errors."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from jobyard import ActionContext, Yard, jsonutil
from jobyard.cli import app
from jobyard.demo import yard
from tests.harness import stack
from tests.liveclient import serve
from tests.processes import free_port
from tests.webhook_receiver import receiver


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


async def test_status_follow_exits_1_when_the_job_fails_and_a_plain_status_read_does_not(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        job_id = await s.submit([{"type": "demo.fail"}])
        followed = await invoke("status", job_id, "--follow", "--url", url, "--timeout", "60")
        read = await invoke("status", job_id, "--url", url)
    assert followed.exit_code == 1 and f"job {job_id}: failed" in followed.output, followed.output
    assert read.exit_code == 0 and f"job {job_id}: failed" in read.output, read.output


async def test_following_past_the_timeout_says_so_and_an_unreachable_api_says_that(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        job_id = await s.submit([{"type": "demo.sleep", "payload": {"seconds": 30}}])
        late = await invoke("status", job_id, "--follow", "--url", url, "--timeout", "0.5")
        waited = await invoke("submit", "demo.sleep", "--payload", '{"seconds": 30}', "--wait", "--url", url,
                              "--timeout", "0.5")  # fmt: skip
    gone = await invoke("status", job_id, "--follow", "--url", url, "--timeout", "1.5")  # the API has stopped
    assert late.exit_code == 1 and f"job {job_id} not final after 0.5s" in late.output, late.output
    assert "is the API running" not in late.output
    assert waited.exit_code == 1 and "not final after 0.5s" in waited.output, waited.output
    assert gone.exit_code == 1 and f"is the API running at {url}?" in gone.output, gone.output


async def test_jobs_lists_newest_first_filters_and_pages(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        alpha = await s.submit([{"type": "demo.noop"}], name="alpha")
        beta = await s.submit([{"type": "demo.fail"}, {"type": "demo.noop"}], name="beta")
        gamma = await s.submit([{"type": "demo.noop"}], name="gamma")
        for job_id in (alpha, beta, gamma):
            await s.wait(job_id)
        listed = await invoke("jobs", "--url", url)
        failed = await invoke("jobs", "--status", "failed", "--url", url)
        first = await invoke("jobs", "--limit", "2", "--url", url)
        second = await invoke("jobs", "--limit", "2", "--cursor", beta, "--url", url)
        found = await invoke("jobs", "--search", "amm", "--url", url)
        none = await invoke("jobs", "--status", "cancelled", "--url", url)
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [gamma, beta, alpha], listed.output
    assert lines[1].split()[1] == "failed" and "1/2 succeeded, 1 failed" in lines[1] and lines[1].endswith("beta")
    assert [line.split()[0] for line in failed.stdout.splitlines()] == [beta], failed.output
    assert [line.split()[0] for line in first.stdout.splitlines()] == [gamma, beta], first.output
    assert first.stderr.strip() == f"more: jobyard jobs --limit 2 --cursor {beta}", first.stderr
    assert [line.split()[0] for line in second.stdout.splitlines()] == [alpha] and not second.stderr, second.output
    assert [line.split()[0] for line in found.stdout.splitlines()] == [gamma], found.output
    assert none.stdout.strip() == "no cancelled jobs", none.output
    assert all(r.exit_code == 0 for r in (listed, failed, first, second, found, none))


async def test_status_names_each_action_and_result_prints_its_value_or_why_there_is_none(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        job_id = await s.submit([
            {"type": "demo.noop", "payload": {"device": "olt-001"}},
            {"type": "demo.fail", "max_attempts": 1},
        ])  # fmt: skip
        await s.wait(job_id)
        api_status = await s.status(job_id)
        shown = await invoke("status", job_id, "--url", url)
        as_json = await invoke("status", job_id, "--json", "--url", url)
        both = await invoke("status", job_id, "--json", "--follow", "--url", url)
        listed = await invoke("jobs", "--json", "--url", url)
        noop, fail = (a["id"] for a in api_status["actions"])
        value = await invoke("result", noop, "--url", url)
        none = await invoke("result", fail, "--url", url)
    lines = shown.stdout.splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [[noop, "succeeded"], [fail, "failed"]], shown.output
    assert json.loads(as_json.stdout) == jsonutil.loads(jsonutil.dumps(api_status)), as_json.output
    assert both.exit_code == 2 and "does not go with" in both.output, both.output  # (Rich wraps the rest)
    assert [job["id"] for job in json.loads(listed.stdout)["items"]] == [job_id], listed.output
    assert value.exit_code == 0 and json.loads(value.stdout) == {"device": "olt-001"}, value.output
    assert none.exit_code == 1 and none.stdout == "", none.output
    assert none.stderr.startswith(f"action {fail} is failed: jobyard.demo."), none.stderr


async def test_webhooks_from_create_to_delete_with_their_delivery_log(make_settings: Any) -> None:
    async with stack(make_settings(webhook_allow_private=True), yard) as s, serve(s.app) as url, receiver() as rec:
        created = await invoke("webhooks", "create", rec.url(), "--event", "job.completed", "--event", "action.failed",
                               "--description", "ops pager", "--url", url)  # fmt: skip
        webhook_id = created.stdout.split()[0]
        refused = await invoke("webhooks", "create", "ftp://example.com/x", "--url", url)
        await s.wait(await s.submit([{"type": "demo.fail", "max_attempts": 1}]))
        await rec.wait_for(2)
        for _ in range(100):  # the relay marks a delivery after its answer came
            deliveries = await invoke("webhooks", "deliveries", "--url", url)
            if deliveries.stdout.count(" delivered ") == 2:
                break
            await asyncio.sleep(0.05)
        failed = await invoke("webhooks", "deliveries", "--status", "failed", "--url", url)
        disabled = await invoke("webhooks", "disable", webhook_id, "--url", url)
        listed = await invoke("webhooks", "list", "--url", url)
        deleted = await invoke("webhooks", "delete", webhook_id, "--url", url)
        left = await invoke("webhooks", "list", "--url", url)
    first = created.stdout.splitlines()[0]
    assert first == f"{webhook_id}  active   {rec.url()}  [action.failed, job.completed]  ops pager", created.output
    assert created.stdout.splitlines()[1].startswith("secret: whsec_"), created.output
    assert refused.exit_code == 1 and "body.url: webhook URL must be http:// or https://" in refused.output
    lines = deliveries.stdout.splitlines()
    assert sorted(line.split()[2] for line in lines) == ["action.failed", "job.completed"], deliveries.output
    assert all(" delivered " in line and "attempts=1  HTTP 200" in line for line in lines), deliveries.output
    assert failed.stdout.strip() == "no deliveries", failed.output
    assert f"{webhook_id}  disabled " in disabled.stdout and f"{webhook_id}  disabled " in listed.stdout
    assert deleted.exit_code == 0 and left.stdout.strip() == "no webhooks", (deleted.output, left.output)


async def test_schedules_from_create_to_delete(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s, serve(s.app) as url:
        created = await invoke("schedules", "create", "hourly", "--action", "demo.noop", "--every", "1h", "--url", url)
        schedule_id = created.stdout.split()[0]
        paused = await invoke("schedules", "pause", schedule_id, "--url", url)
        listed = await invoke("schedules", "list", "--url", url)
        resumed = await invoke("schedules", "resume", schedule_id, "--url", url)
        neither = await invoke("schedules", "create", "never", "--action", "demo.noop", "--url", url)
        deleted = await invoke("schedules", "delete", schedule_id, "--url", url)
        left = await invoke("schedules", "list", "--url", url)
    assert created.exit_code == 0 and "every 1h" in created.stdout and "[demo.noop]" in created.stdout, created.output
    assert re.search(r" next \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ", created.stdout), created.stdout  # to the second
    assert " paused " in paused.stdout and listed.stdout.split()[0] == schedule_id and " paused " in listed.stdout
    assert " next " in resumed.stdout and resumed.exit_code == 0, resumed.output
    assert neither.exit_code == 1 and "give exactly one of cron and every" in neither.output, neither.output
    assert deleted.exit_code == 0 and left.stdout.strip() == "no schedules", (deleted.output, left.output)


quiet = Yard()


@quiet.action("quiet.sleep")
async def _quiet_sleep(ctx: ActionContext, payload: Any) -> None:
    await asyncio.sleep(30)  # no progress: the job's stream carries nothing but heartbeats meanwhile


async def test_a_follow_of_a_quiet_job_ends_at_its_timeout_not_at_the_next_heartbeat(make_settings: Any) -> None:
    async with stack(make_settings(stream_heartbeat=60.0), quiet) as s, serve(s.app) as url:
        job_id = await s.submit([{"type": "quiet.sleep"}])
        began = time.monotonic()
        late = await invoke("status", job_id, "--follow", "--url", url, "--timeout", "1")
        took = time.monotonic() - began
        await s.http.post(f"/api/jobs/{job_id}/cancel")
    assert late.exit_code == 1 and f"job {job_id} not final after 1s" in late.output, late.output
    assert took < 30, took  # the next heartbeat would have come after 60 s


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


@pytest.mark.parametrize(
    "command",
    [
        ["submit", "demo.noop"],
        ["submit", "demo.noop", "--wait"],
        ["status", "01a234df-7aeb-71e9-8620-1b5f8e7cf004"],
        ["status", "01a234df-7aeb-71e9-8620-1b5f8e7cf004", "--follow", "--timeout", "0.5"],
        ["cancel", "01a234df-7aeb-71e9-8620-1b5f8e7cf004"],
        ["retry", "01a234df-7aeb-71e9-8620-1b5f8e7cf004"],
        ["replay", "01a234df-7aeb-71e9-8620-1b5f8e7cf004"],
        ["dead-letters"],
        ["top", "--once"],
        ["jobs"],
        ["schedules", "list"],
        ["result", "01a234df-7aeb-71e9-8620-1b5f8e7cf004"],
        ["webhooks", "list"],
    ],
    ids=" ".join,
)
def test_every_command_that_calls_the_api_says_when_it_cannot_reach_it(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(app, [*command, "--url", url])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].endswith(f"(is the API running at {url}?)"), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["submit", "demo.noop"], ["schedules", "create", "s", "--action", "demo.noop"]])
def test_a_count_below_one_is_refused_before_calling_the_api(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--count", "0", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2 and "'--count'" in result.output, result.output
