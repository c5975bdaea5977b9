"""Domain events, webhooks, schedules, metrics and retention through the whole stack (embedded and servers)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from jobyard import jsonutil
from jobyard.broker.memory import MemoryBroker
from jobyard.demo import yard as demo_yard
from jobyard.webhooks import verify_signature
from tests import services
from tests.harness import Stack, stack
from tests.webhook_receiver import receiver

SECRET = "a-job-webhook-secret-of-some-length"


@asynccontextmanager
async def domain_events(s: Stack) -> AsyncIterator[asyncio.Queue[tuple[str, bytes]]]:
    """Every domain event the stack publishes: bound in process (embedded) or with aio-pika (RabbitMQ)."""
    broker = s.runtime.broker
    if isinstance(broker, MemoryBroker):
        yield broker.bind_events("#")
        return
    import aio_pika

    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    connection = await aio_pika.connect(services.AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(s.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.put_nowait((message.routing_key or "", message.body))

        await queue.consume(on_message)
        yield received
        await exchange.delete()
    finally:
        await connection.close()


async def events_of(queue: asyncio.Queue[tuple[str, bytes]], job_id: str, until: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not any(e["type"] == until for e in seen):
            routing_key, body = await queue.get()
            event = jsonutil.loads(body)
            assert routing_key == event["type"]
            if event["data"]["job_id"] == job_id:
                seen.append(event)
    return seen


def _settings(make_settings: Any, **overrides: Any) -> Any:
    return make_settings(events_exchange=f"jobyard-test-events-{uuid.uuid4().hex[:8]}", **overrides)


async def test_domain_events_are_published_for_a_job_in_order(make_settings: Any) -> None:
    async with stack(_settings(make_settings), demo_yard) as s, domain_events(s) as queue:
        job_id = await s.submit(
            [{"type": "demo.noop"}, {"type": "demo.fail", "payload": {"message": "no"}, "max_attempts": 1}]
        )
        await s.wait(job_id)
        events = await events_of(queue, job_id, until="job.completed")
    types = [e["type"] for e in events]
    assert types[0] == "job.created" and types[-1] == "job.completed"
    assert sorted(types) == ["action.failed", "job.completed", "job.created", "job.ready"]
    assert types.index("job.ready") < types.index("job.completed")
    failed = next(e for e in events if e["type"] == "action.failed")
    assert failed["data"]["type"] == "demo.fail" and failed["tenant_id"] == "default"
    completed = events[-1]["data"]
    assert (completed["status"], completed["succeeded"], completed["failed"], completed["total"]) == ("failed", 1, 1, 2)
    assert len({e["id"] for e in events}) == 4


async def test_a_relay_leads_and_publishes_events_as_soon_as_it_starts(make_settings: Any) -> None:
    # A 40 s lease makes the relay hold an election every 5 s; the first one must not wait for that interval
    # (it did: a relay started, then events, the reaper and schedules stood still for 5 s).
    async with stack(_settings(make_settings, lease_seconds=40.0), demo_yard) as s, domain_events(s) as queue:
        assert s.relay is not None
        async with asyncio.timeout(3):
            while not s.relay.is_leader:  # noqa: ASYNC110 - a plain flag of the relay's, polled
                await asyncio.sleep(0.02)
            job_id = await s.submit([{"type": "demo.noop"}])
            events = await events_of(queue, job_id, until="job.completed")
    assert [e["type"] for e in events] == ["job.created", "job.ready", "job.completed"]


async def test_webhooks_are_signed_delivered_and_logged(make_settings: Any) -> None:
    settings = _settings(make_settings, webhook_allow_private=True, webhook_secret=SECRET)
    async with receiver() as rec, stack(settings, demo_yard) as s:
        created = await s.http.post("/api/webhooks", json={"url": rec.url("/tenant"), "events": ["job.completed"]})
        assert created.status_code == 201, created.text
        tenant_secret = created.json()["secret"]
        assert tenant_secret.startswith("whsec_")
        assert "secret" not in (await s.http.get(f"/api/webhooks/{created.json()['id']}")).json()
        job_id = await s.submit([{"type": "demo.noop"}], webhook_url=rec.url("/job"))
        await s.wait(job_id)
        deliveries = await rec.wait_for(2)
        by_path = {d.path: d for d in deliveries}
        tenant_event = verify_signature(
            by_path["/tenant"].body, by_path["/tenant"].headers["jobyard-signature"], tenant_secret
        )
        job_event = verify_signature(by_path["/job"].body, by_path["/job"].headers["jobyard-signature"], SECRET)
        assert tenant_event["type"] == job_event["type"] == "job.completed"
        assert job_event["data"]["job_id"] == job_id and job_event["data"]["status"] == "succeeded"
        assert by_path["/job"].headers["jobyard-event"] == "job.completed"
        for _ in range(100):
            log = (await s.http.get("/api/webhooks/deliveries")).json()["items"]
            if len(log) == 2 and all(d["status"] == "delivered" for d in log):
                break
            await asyncio.sleep(0.05)
        assert sorted((d["status"], d["response_code"], d["attempts"]) for d in log) == [("delivered", 200, 1)] * 2


async def test_a_failing_webhook_is_retried_with_backoff_then_given_up(make_settings: Any) -> None:
    settings = _settings(
        make_settings, webhook_allow_private=True, webhook_max_attempts=3, webhook_retry_base_delay=0.05
    )
    async with receiver(status=500) as rec, stack(settings, demo_yard) as s:
        hook = (await s.http.post("/api/webhooks", json={"url": rec.url(), "events": ["job.created"]})).json()
        await s.submit([{"type": "demo.noop"}])
        await rec.wait_for(3)
        for _ in range(100):
            (log,) = (await s.http.get("/api/webhooks/deliveries", params={"webhook_id": hook["id"]})).json()["items"]
            if log["status"] == "failed":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert len(rec.received) == 3  # given up: no fourth attempt
    assert (log["status"], log["attempts"], log["response_code"]) == ("failed", 3, 500)
    assert log["last_error"].startswith("HTTP 500")
    assert len({d.headers["jobyard-delivery"] for d in rec.received}) == 1  # one delivery id across its retries


async def test_private_webhook_targets_are_refused_at_the_api(make_settings: Any) -> None:
    async with stack(_settings(make_settings, webhook_secret=SECRET), demo_yard) as s:
        hook = await s.http.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        job = await s.http.post(
            "/api/jobs", json={"actions": [{"type": "demo.noop"}], "webhook_url": "http://169.254.169.254/x"}
        )
        listed = (await s.http.get("/api/webhooks")).json()["items"]
    assert hook.status_code == 422 and hook.json()["detail"][0]["loc"] == ["body", "url"]
    assert job.status_code == 422 and job.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    assert listed == []


async def test_a_job_webhook_needs_the_server_secret(make_settings: Any) -> None:
    async with stack(_settings(make_settings, webhook_allow_private=True), demo_yard) as s:
        response = await s.http.post(
            "/api/jobs", json={"actions": [{"type": "demo.noop"}], "webhook_url": "http://127.0.0.1:9/x"}
        )
    assert response.status_code == 422 and "JOBYARD_WEBHOOK_SECRET" in response.json()["detail"][0]["msg"]


async def test_schedules_fire_jobs_and_can_be_paused_resumed_and_deleted(make_settings: Any) -> None:
    async with stack(_settings(make_settings), demo_yard) as s:
        body = {"name": "tick", "every": "1s", "job": {"actions": [{"type": "demo.noop", "payload": {"n": 1}}]}}
        created = await s.http.post("/api/schedules", json=body)
        assert created.status_code == 201, created.text
        schedule = created.json()
        assert schedule["every_seconds"] == 1.0 and schedule["description"] == "every 1s"
        for _ in range(100):
            detail = (await s.http.get(f"/api/schedules/{schedule['id']}")).json()
            if detail["fires"]:
                break
            await asyncio.sleep(0.05)
        fire = detail["fires"][0]
        job = (await s.http.get(f"/api/jobs/{fire['job_id']}")).json()
        assert job["metadata"]["schedule_id"] == schedule["id"] and job["name"] == "tick"
        paused = (await s.http.post(f"/api/schedules/{schedule['id']}/pause")).json()
        assert paused["paused"] is True
        fires_when_paused = len((await s.http.get(f"/api/schedules/{schedule['id']}")).json()["fires"])
        await asyncio.sleep(1.5)
        assert len((await s.http.get(f"/api/schedules/{schedule['id']}")).json()["fires"]) == fires_when_paused
        resumed = (await s.http.post(f"/api/schedules/{schedule['id']}/resume")).json()
        assert resumed["paused"] is False
        assert (await s.http.delete(f"/api/schedules/{schedule['id']}")).status_code == 204
        assert (await s.http.get(f"/api/schedules/{schedule['id']}")).status_code == 404
        assert (await s.http.get("/api/schedules")).json()["items"] == []


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"cron": "not a cron"}, ["body", "cron"]),
        ({"every": "soon"}, ["body", "every"]),
        ({"job": {"actions": [{"type": "nope"}]}}, ["body", "job", "actions", 0, "type"]),
        ({"timezone": "Nowhere/Land"}, ["body", "timezone"]),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(
    make_settings: Any, change: dict[str, Any], loc: list[Any]
) -> None:
    body: dict[str, Any] = {"name": "bad", "every": "1h", "job": {"actions": [{"type": "demo.noop"}]}, **change}
    if "cron" in change:
        del body["every"]
    async with stack(_settings(make_settings), demo_yard) as s:
        response = await s.http.post("/api/schedules", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


async def test_metrics_expose_store_queue_cache_and_rate_limit_figures(make_settings: Any) -> None:
    async with stack(_settings(make_settings, metrics_interval=0.05), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.noop"}])
        await s.wait(job_id)
        await s.http.get(f"/api/jobs/{job_id}")
        await asyncio.sleep(0.2)
        text = (await s.http.get("/metrics")).text
        on_postgresql = s.runtime.repo.dialect == "postgresql"
    if on_postgresql:  # the grouped submit statements: one job, one statement
        assert "jobyard_submit_statements_total 1.0" in text and "jobyard_submit_statement_jobs_total 1.0" in text
    else:
        assert "jobyard_submit_statements" not in text  # SQLite stores each submission on its own
    for name in (
        'jobyard_handoff_messages_total{outcome="published"} 1.0',
        'jobyard_jobs{status="succeeded"} 1.0',
        "jobyard_outbox_rows",
        "jobyard_outbox_lag_seconds",
        "jobyard_events_rows",
        "jobyard_queue_depth",
        "jobyard_cache_hit_ratio",
        'jobyard_cache_requests_total{result="misses"}',
        "jobyard_cache_unstored_values_total 0.0",
        "jobyard_rate_limited_requests_total",
        "jobyard_webhook_deliveries",
    ):
        assert name in text, name


async def test_readyz_lists_each_dependency(make_settings: Any) -> None:
    async with stack(_settings(make_settings), demo_yard) as s:
        ready = (await s.http.get("/readyz")).json()
    assert ready["status"] == "ok" and ready["checks"] == {"database": "ok", "broker": "ok", "redis": "ok"}


async def test_retention_prunes_finished_jobs_with_everything_hanging_off_them(make_settings: Any) -> None:
    settings = _settings(make_settings, webhook_allow_private=True, webhook_secret=SECRET)
    async with receiver() as rec, stack(settings, demo_yard) as s:
        old = await s.submit([{"type": "demo.noop"}, {"type": "demo.noop"}], webhook_url=rec.url())
        await s.wait(old)
        await rec.wait_for(1)
        running = await s.submit([{"type": "demo.sleep", "payload": {"seconds": 2}}])
        await asyncio.sleep(0.3)
        pruned = await s.runtime.repo.prune_finished(older_than=0.0, batch=1)
        assert pruned["jobs"] == 1
        assert (await s.http.get(f"/api/jobs/{old}")).status_code == 404
        assert (await s.http.get(f"/api/jobs/{running}")).status_code == 200  # not finished: kept
        assert (await s.http.get("/api/webhooks/deliveries")).json()["items"] == []


async def test_dashboard_pages_list_schedules_webhooks_and_deliveries(make_settings: Any) -> None:
    settings = _settings(make_settings, webhook_allow_private=True)
    async with receiver() as rec, stack(settings, demo_yard) as s:
        body = {"name": "nightly-report", "cron": "0 0 * * *", "job": {"actions": [{"type": "demo.noop"}]}}
        assert (await s.http.post("/api/schedules", json=body)).status_code == 201
        await s.http.post("/api/webhooks", json={"url": rec.url(), "events": ["job.created"], "description": "ops"})
        await s.submit([{"type": "demo.noop"}])
        await rec.wait_for(1)
        await asyncio.sleep(0.2)
        schedules = (await s.http.get("/schedules")).text
        webhooks = (await s.http.get("/webhooks")).text
        failed_only = (await s.http.get("/webhooks", params={"status": "failed"})).text
    assert "nightly-report" in schedules and "cron 0 0 * * * (UTC)" in schedules
    assert 'aria-current="page"' in schedules and 'href="/schedules"' in schedules
    assert 'data-schedule-do="pause"' in schedules
    assert rec.url() in webhooks and "job.created" in webhooks and "delivered" in webhooks
    assert "No deliveries with status failed" in failed_only


def _timestamps(value: Any) -> list[str]:
    """Every string in a JSON document that reads as an ISO date and time."""
    if isinstance(value, dict):
        return [t for v in value.values() for t in _timestamps(v)]
    if isinstance(value, list):
        return [t for v in value for t in _timestamps(v)]
    return [value] if isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", value) else []


async def test_every_time_the_api_answers_with_carries_its_time_zone(make_settings: Any) -> None:
    # SQLite stores times without their zone; every answer must still say UTC, as on PostgreSQL.
    settings = _settings(make_settings, webhook_secret=SECRET, webhook_allow_private=True)
    async with stack(settings, demo_yard) as s, receiver() as rec:
        hook = (await s.http.post("/api/webhooks", json={"url": rec.url(), "events": ["job.completed"]})).json()
        job_id = await s.submit([{"type": "demo.noop"}], webhook_url=rec.url("/job"))
        await s.wait(job_id)
        await rec.wait_for(2)
        schedule = (await s.http.post("/api/schedules", json={"name": "t", "every": "1h", "job": {"actions": [
            {"type": "demo.noop"}]}})).json()  # fmt: skip
        answers = [hook, schedule]
        for path in (
            "/api/jobs", f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/status", "/api/webhooks",
            f"/api/webhooks/{hook['id']}", "/api/webhooks/deliveries", "/api/schedules",
            f"/api/schedules/{schedule['id']}", "/api/audit",
        ):  # fmt: skip
            response = await s.http.get(path)
            assert response.status_code == 200, (path, response.text)
            answers.append(response.json())
        answers.append((await s.http.patch(f"/api/webhooks/{hook['id']}", json={"active": False})).json())
        key = (await s.http.post("/api/keys", json={"name": "k", "scopes": ["admin"]})).json()  # keys required now
        keys = await s.http.get("/api/keys", headers={"Authorization": f"Bearer {key['key']}"})
        answers += [key, keys.json()]
    stamps = [t for answer in answers for t in _timestamps(answer)]
    assert len(stamps) > 20, stamps
    assert [t for t in stamps if not t.endswith(("+00:00", "Z"))] == []


async def test_a_disabled_webhook_holds_its_deliveries_and_a_deleted_one_ends_them(make_settings: Any) -> None:
    settings = _settings(
        make_settings, webhook_allow_private=True, webhook_max_attempts=50, webhook_retry_base_delay=0.05
    )
    async with receiver(status=500) as rec, receiver(status=500) as gone, stack(settings, demo_yard) as s:
        held = (await s.http.post("/api/webhooks", json={"url": rec.url(), "events": ["job.created"]})).json()
        dropped = (await s.http.post("/api/webhooks", json={"url": gone.url(), "events": ["job.created"]})).json()
        await s.submit([{"type": "demo.noop"}])
        await rec.wait_for(1)  # each delivery failed once: pending, and due again within 0.1 s
        await gone.wait_for(1)
        disabled = await s.http.patch(f"/api/webhooks/{held['id']}", json={"active": False})
        deleted = await s.http.delete(f"/api/webhooks/{dropped['id']}")
        await asyncio.sleep(0.3)  # an attempt already under way when they changed ends meanwhile
        counts = len(rec.received), len(gone.received)
        await asyncio.sleep(1.2)  # retries every 0.1-0.4 s, were they sent
        counts_later = len(rec.received), len(gone.received)
        rec.status = 200
        enabled = await s.http.patch(f"/api/webhooks/{held['id']}", json={"active": True})
        for _ in range(100):
            log = {d["webhook_id"]: d for d in (await s.http.get("/api/webhooks/deliveries")).json()["items"]}
            if log[held["id"]]["status"] == "delivered":
                break
            await asyncio.sleep(0.05)
    assert (disabled.status_code, deleted.status_code, enabled.status_code) == (200, 204, 200)
    assert counts_later == counts, (counts, counts_later)
    assert (log[held["id"]]["status"], log[held["id"]]["response_code"]) == ("delivered", 200)
    assert len(rec.received) == counts[0] + 1  # sent once it was enabled again
    assert (log[dropped["id"]]["status"], log[dropped["id"]]["last_error"]) == (
        "failed",
        "the webhook endpoint was deleted",
    )
