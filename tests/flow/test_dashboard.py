"""The dashboard's pages and the operations API behind them: counts, search, queues, workers, dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from jobyard.demo import yard
from tests.harness import stack


async def test_jobs_page_lists_jobs_with_their_status_counts(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        job_id = await s.submit([{"type": "demo.noop"}], name="diagnostics olt-042")
        await s.wait(job_id)
        page = await s.http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "diagnostics olt-042" in page.text and f"/jobs/{job_id}" in page.text
    assert 'data-count="succeeded">1<' in page.text


async def test_job_search_finds_by_name_and_by_id(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        wanted = await s.submit([{"type": "demo.noop"}], name="config push onu-7")
        await s.submit([{"type": "demo.noop"}], name="something else")
        by_name = (await s.http.get("/api/jobs", params={"q": "push onu"})).json()["items"]
        by_id = (await s.http.get("/api/jobs", params={"q": wanted})).json()["items"]
    assert [j["id"] for j in by_name] == [wanted] and [j["id"] for j in by_id] == [wanted]


async def test_job_counts_cover_every_status(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        await s.wait(await s.submit([{"type": "demo.fail"}]), timeout=30)
        counts = (await s.http.get("/api/job-counts")).json()
    assert counts == {"pending": 0, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 0}


async def test_job_page_shows_the_job_and_embeds_its_actions(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        job_id = await s.submit([{"type": "demo.noop"}, {"type": "demo.sleep", "payload": {"seconds": 0.1}}])
        page = await s.http.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and 'id="timeline"' in page.text and "demo.sleep" in page.text


async def test_job_page_of_an_unknown_job_is_a_404_page(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        page = await s.http.get(f"/jobs/{uuid.uuid4()}")
    assert page.status_code == 404 and "Not found" in page.text


async def test_submit_page_lists_the_registered_action_types(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        page = await s.http.get("/submit")
    assert all(f'<option value="{d.name}"' in page.text for d in yard.definitions)


async def test_dead_letters_page_offers_a_replay_for_each(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        await s.wait(await s.submit([{"type": "demo.fail"}]), timeout=30)
        dead = (await s.http.get("/api/dead-letters")).json()["items"]
        page = await s.http.get("/dead-letters")
    assert f'data-replay="{dead[0]["id"]}"' in page.text


async def test_workers_report_their_presence_with_queues_and_processed_count(make_settings: Any) -> None:
    async with stack(make_settings(presence_interval=0.1), yard) as s:
        await s.wait(await s.submit([{"type": "demo.noop"}]))
        deadline = time.monotonic() + 10
        while True:
            workers = (await s.http.get("/api/workers")).json()["workers"]
            if workers and workers[0]["processed"] >= 1:
                break
            assert time.monotonic() < deadline, workers
            await asyncio.sleep(0.05)
    assert workers[0]["id"] == "test-worker-0" and workers[0]["queues"] == s.workers[0].queues


async def test_queues_report_depth_consumers_and_history(make_settings: Any) -> None:
    async with stack(make_settings(presence_interval=0.1), yard) as s:
        deadline = time.monotonic() + 10
        while True:
            body = (await s.http.get("/api/queues")).json()
            default = [q for q in body["queues"] if q["name"] == "default"]
            if default and default[0]["consumers"] == 1:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
    assert default[0]["depth"] == 0 and body["history"]


async def test_every_page_renders(make_settings: Any) -> None:
    async with stack(make_settings(), yard) as s:
        codes = {path: (await s.http.get(path)).status_code for path in ("/queues", "/workers", "/static/app.js")}
    assert codes == {"/queues": 200, "/workers": 200, "/static/app.js": 200}
