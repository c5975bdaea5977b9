"""The dashboard as a person uses it, in headless Chromium: submit, watch, cancel, replay; screenshots kept."""

from __future__ import annotations

import time
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot


def submit(dashboard: str, actions: list[dict[str, Any]], name: str) -> str:
    response = httpx.post(f"{dashboard}/api/jobs", json={"name": name, "actions": actions})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_status(dashboard: str, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{dashboard}/api/jobs/{job_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} never became {status}"
        time.sleep(0.1)


def test_a_job_submitted_from_the_form_reaches_100_percent_without_a_reload(dashboard: str, page: Any) -> None:
    page.goto(f"{dashboard}/submit")
    page.get_by_label("Job name (optional)").fill("e2e progress")
    page.get_by_label("Action type").select_option("e2e.steps")
    page.get_by_label("Payload (JSON)").fill('{"seconds": 3}')
    page.get_by_label("Count").fill("3")
    screenshot(page, "submit-form")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(page.locator("#job-pct")).not_to_have_text("100%")
    expect(page.locator("#action-rows tr")).to_have_count(3)
    expect(page.locator("#job-status")).to_have_text("running")
    screenshot(page, "job-running")
    expect(page.locator("#job-pct")).to_have_text("100%", timeout=30_000)
    expect(page.locator("#job-status")).to_have_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "job-succeeded")


def test_cancel_stops_a_running_job(dashboard: str, page: Any) -> None:
    job_id = submit(dashboard, [{"type": "e2e.wait"}, {"type": "e2e.wait"}], "e2e cancel")
    wait_status(dashboard, job_id, "running")
    page.goto(f"{dashboard}/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#action-rows .badge.s-cancelled")).to_have_count(2, timeout=30_000)
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    screenshot(page, "job-cancelled")


def test_a_dead_letter_is_replayed_from_its_page(dashboard: str, page: Any) -> None:
    job_id = submit(dashboard, [{"type": "e2e.fail"}], "e2e dead letter")
    wait_status(dashboard, job_id, "failed")
    action_id = httpx.get(f"{dashboard}/api/jobs/{job_id}").json()["actions"][0]["id"]
    page.goto(f"{dashboard}/dead-letters")
    screenshot(page, "dead-letters")
    page.locator(f'[data-replay="{action_id}"]').click()
    expect(page.locator("#dl-message")).to_contain_text("queued again")
    expect(page.locator(f'tr[data-action="{action_id}"]')).to_contain_text("replayed")
    action = httpx.get(f"{dashboard}/api/jobs/{job_id}").json()["actions"][0]
    assert action["max_attempts"] > 1


def test_the_jobs_list_shows_a_new_job_without_a_reload(dashboard: str, page: Any) -> None:
    page.goto(f"{dashboard}/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    job_id = submit(dashboard, [{"type": "e2e.steps", "payload": {"seconds": 0.5}}], "e2e appears live")
    expect(page.locator(f'tr[data-job="{job_id}"] .badge')).to_have_text("succeeded", timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "jobs")


def test_queues_and_workers_pages_show_the_running_worker(dashboard: str, page: Any) -> None:
    page.goto(f"{dashboard}/workers")
    expect(page.locator("#worker-rows")).to_contain_text("e2e")
    screenshot(page, "workers")
    page.goto(f"{dashboard}/queues")
    expect(page.locator("#queue-rows")).to_contain_text("e2e")
    page.wait_for_timeout(2500)  # a second sample, so the charts have a line
    screenshot(page, "queues")
