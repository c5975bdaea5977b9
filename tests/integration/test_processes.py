"""The real processes on the real servers: `jobyard api`, `jobyard relay` and two `jobyard worker`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.conftest import delete_rabbit_queues
from tests.processes import Cluster, cluster_env, free_port, fresh_database


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    for name in ("postgresql", "rabbitmq", "redis"):
        services.require(name)
    url = await fresh_database(f"{services.PG_DB_PREFIX}_processes")
    c = Cluster(env=cluster_env(url), port=free_port(), log_dir=tmp_path)
    migrated = c.run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    c.start("api", "api", "--port", str(c.port))
    c.start("relay", "relay")
    c.start("worker-1", "worker", "-c", "32")
    c.start("worker-2", "worker", "-c", "32")
    try:
        await c.wait_ready()
        yield c
    finally:
        c.stop_all()
        await delete_rabbit_queues(c.env["JOBYARD_QUEUE_PREFIX"])


async def wait_final(http: httpx.AsyncClient, job_id: str, timeout: float = 180) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await http.get(f"/api/jobs/{job_id}/status")).json()
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} not final: {status}")
        await asyncio.sleep(0.1)


async def test_200_jobs_of_three_actions_all_succeed_exactly_once(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        gate = asyncio.Semaphore(20)

        async def submit(i: int) -> str:
            async with gate:
                body = {
                    "name": f"job-{i}",
                    "actions": [{"type": "demo.noop", "payload": {"i": i, "n": n}} for n in range(3)],
                }
                # A dropped connection leaves a POST's fate unknown: retry with the same Idempotency-Key, as a
                # careful client does; the store returns the one job however many tries reached it.
                for attempt in range(3):
                    try:
                        response = await http.post("/api/jobs", json=body, headers={"Idempotency-Key": f"job-{i}"})
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                assert response.status_code in (200, 202), response.text
                return str(response.json()["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(200)))
        finals = [await wait_final(http, job_id) for job_id in ids]
    assert len(set(ids)) == 200
    assert all(f["status"] == "succeeded" for f in finals), cluster.logs()
    actions = [a for f in finals for a in f["actions"]]
    assert len(actions) == 600 and all(a["status"] == "succeeded" and a["attempts"] == 1 for a in actions)
    assert all(f["progress"]["percent"] == 100.0 for f in finals)


async def test_retries_and_failures_across_processes(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as http:
        flaky = (
            await http.post("/api/jobs", json={"actions": [{"type": "demo.flaky", "payload": {"fail_times": 2}}]})
        ).json()
        failing = (
            await http.post(
                "/api/jobs",
                json={
                    "actions": [
                        {"type": "demo.fail"},
                        {"type": "demo.noop"},
                        {"type": "demo.sleep", "payload": {"seconds": 0.3}},
                    ]
                },
            )
        ).json()
        flaky_final = await wait_final(http, flaky["id"])
        failing_final = await wait_final(http, failing["id"])
    (flaky_action,) = flaky_final["actions"]
    assert flaky_final["status"] == "succeeded" and flaky_action["attempts"] == 3
    assert failing_final["status"] == "failed"
    by_type = {a["type"]: a for a in failing_final["actions"]}
    assert by_type["demo.fail"]["status"] == "failed" and by_type["demo.fail"]["attempts"] == 3
    assert "this action always fails" in by_type["demo.fail"]["error"]
    assert by_type["demo.noop"]["status"] == by_type["demo.sleep"]["status"] == "succeeded"


async def test_the_cli_submits_waits_and_shows_status(cluster: Cluster) -> None:
    submitted = await asyncio.to_thread(
        cluster.run,
        "submit",
        "demo.sleep",
        "--payload",
        '{"seconds": 0.2}',
        "--count",
        "2",
        "--wait",
        "--url",
        cluster.url,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert "succeeded  100%" in submitted.stdout
    shown = await asyncio.to_thread(cluster.run, "status", job_id, "--url", cluster.url)
    assert shown.returncode == 0 and shown.stdout.count("demo.sleep") == 2
    refused = await asyncio.to_thread(cluster.run, "submit", "no.such", "--url", cluster.url)
    assert refused.returncode == 1 and "unknown action type 'no.such'" in refused.stderr


async def test_the_cli_cancels_lists_dead_letters_and_replays(cluster: Cluster) -> None:
    run = cluster.run
    slow = await asyncio.to_thread(run, "submit", "demo.sleep", "--payload", '{"seconds": 30}', "--url", cluster.url)
    slow_id = slow.stdout.strip()
    await asyncio.sleep(1.0)
    cancelled = await asyncio.to_thread(run, "cancel", slow_id, "--url", cluster.url)
    assert cancelled.returncode == 0 and "1 running actions asked to stop" in cancelled.stdout
    failing = await asyncio.to_thread(run, "submit", "demo.fail", "--wait", "--url", cluster.url)
    assert failing.returncode == 1 and "failed" in failing.stdout
    listed = await asyncio.to_thread(run, "dead-letters", "--type", "demo.fail", "--url", cluster.url)
    action_id = listed.stdout.split()[0]
    assert listed.returncode == 0 and "this action always fails" in listed.stdout
    replayed = await asyncio.to_thread(run, "replay", action_id, "--max-attempts", "1", "--url", cluster.url)
    assert replayed.returncode == 0 and "up to attempt 4" in replayed.stdout
    again = await asyncio.to_thread(run, "retry", slow_id, "--url", cluster.url)
    assert again.returncode == 1 and "404" in again.stderr  # a job id is not an action id


async def test_each_process_names_its_database_connections(cluster: Cluster) -> None:
    import asyncpg

    conn = await asyncpg.connect(cluster.env["JOBYARD_DATABASE_URL"])
    try:
        async with asyncio.timeout(20):
            while True:
                names = {
                    r["application_name"]
                    for r in await conn.fetch(
                        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                    )
                }
                if {"jobyard-api", "jobyard-relay", "jobyard-worker"} <= names:
                    break
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


@pytest.mark.parametrize("query", ["", "?application_name=billing-jobs"])
async def test_a_database_url_may_name_the_connections_itself(
    pg_database: str, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    from jobyard import config
    from jobyard.store import create_repository

    monkeypatch.setattr(config, "process_name", "jobyard-conftest")  # what the CLI sets for its command
    expected = "billing-jobs" if query else "jobyard-conftest"
    repo = create_repository(config.Settings(database_url=pg_database + query))
    try:
        async with repo._tx() as conn:  # the SQLAlchemy engine (which refused application_name in the URL before)
            assert (await conn.execute(text("SHOW application_name"))).scalar() == expected
        async with repo._driver() as raw:  # the hot path's own asyncpg pool
            assert await raw.fetchval("SHOW application_name") == expected
    finally:
        await repo.close()
