"""A job's first status read in the API process that stored it needs no store: the process keeps it as its copy."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

from jobyard import jsonutil
from jobyard.api import routes_jobs
from jobyard.api.views import status_view
from jobyard.demo import yard as demo_yard
from tests.harness import stack


async def test_a_new_job_s_first_read_is_the_process_s_own_copy_and_is_what_the_store_says(
    make_settings: Any,
) -> None:
    async with stack(make_settings(), demo_yard, workers=0) as s:  # no worker: the jobs stay as they were stored
        cache = s.runtime.cache
        async with asyncio.timeout(5):
            while not cache.serves_local_copies:  # noqa: ASYNC110 - the API's subscription, confirmed
                await asyncio.sleep(0.01)
        one = await s.http.post(
            "/api/jobs",
            json={"name": "n", "metadata": {"k": [1]}, "actions": [{"type": "demo.noop", "payload": {"x": 1.5}}] * 3},
        )
        batch = await s.http.post(
            "/api/jobs:batch",
            json={
                "jobs": [
                    {"actions": [{"type": "demo.noop"}]},
                    {
                        "actions": [
                            {"type": "demo.noop", "payload": "é", "queue": "other", "max_attempts": 2, "timeout": 7}
                        ]
                    },
                ]
            },
        )
        ids = [one.json()["id"], *(job["id"] for job in batch.json()["jobs"])]
        for job_id in ids:
            before = (cache.stats.local_hits, cache.stats.hits, cache.stats.misses)
            read = await s.http.get(f"/api/jobs/{job_id}/status")
            assert (cache.stats.local_hits, cache.stats.hits, cache.stats.misses) == (
                before[0] + 1,
                before[1],
                before[2],
            )
            found = await s.runtime.repo.get_job_with_actions("default", UUID(job_id))
            assert found is not None
            assert read.status_code == 200 and read.content == jsonutil.dumps(status_view(*found))  # byte for byte

        key = f"priming-{uuid4()}"
        replayed = await s.http.post(  # a replay stores nothing: nothing is primed (and nothing goes wrong)
            "/api/jobs",
            json={"actions": [{"type": "demo.noop"}]},
            headers={"Idempotency-Key": key},
        )
        again = await s.http.post(
            "/api/jobs", json={"actions": [{"type": "demo.noop"}]}, headers={"Idempotency-Key": key}
        )
        assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == replayed.json()["id"]
        assert (await s.http.get(f"/api/jobs/{replayed.json()['id']}/status")).json()["status"] == "pending"


async def test_a_primed_copy_gives_way_to_the_job_s_progress(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard, workers=1) as s:
        job_id = await s.submit([{"type": "demo.noop"}] * 2)
        await s.wait(job_id)
        read = await s.http.get(f"/api/jobs/{job_id}/status")
        assert read.json()["status"] == "succeeded"
        assert [a["status"] for a in read.json()["actions"]] == ["succeeded", "succeeded"]


async def _listening(s: Any) -> None:
    async with asyncio.timeout(5):
        while not s.runtime.cache.serves_local_copies:  # noqa: ASYNC110 - the API's subscription, confirmed
            await asyncio.sleep(0.01)


async def test_a_failure_to_prime_never_fails_an_accepted_submission(make_settings: Any, monkeypatch: Any) -> None:
    async with stack(make_settings(), demo_yard, workers=1) as s:
        await _listening(s)

        def broken(*_args: Any, **_kwargs: Any) -> bool:
            raise RuntimeError("a bug in keeping the first status")

        monkeypatch.setattr(s.runtime.cache, "prime", broken)
        one = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}]})
        batch = await s.http.post("/api/jobs:batch", json={"jobs": [{"actions": [{"type": "demo.noop"}]}]})
        assert one.status_code == 202 and batch.status_code == 202
        monkeypatch.undo()
        for job_id in (one.json()["id"], batch.json()["jobs"][0]["id"]):
            assert (await s.wait(job_id))["status"] == "succeeded"  # stored, published and run as any job


async def test_a_first_status_that_fails_to_render_is_read_from_the_store(make_settings: Any, monkeypatch: Any) -> None:
    """The copy is rendered on its first read: if that fails, the read goes on as if there were no copy."""

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in building the first status")

    monkeypatch.setattr(routes_jobs, "ActionRecord", broken)  # only the primed copy builds its actions with it
    async with stack(make_settings(), demo_yard, workers=0) as s:
        await _listening(s)
        accepted = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop"}] * 3})
        assert accepted.status_code == 202  # nothing is rendered when the job is stored
        local_hits = s.runtime.cache.stats.local_hits
        read = await s.http.get(f"/api/jobs/{accepted.json()['id']}/status")
        assert read.status_code == 200, read.text
        assert read.json()["status"] == "pending" and [a["status"] for a in read.json()["actions"]] == ["queued"] * 3
        assert s.runtime.cache.stats.local_hits == local_hits  # from the store (the copy was dropped), not the copy
