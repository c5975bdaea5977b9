"""Cancel, retry, replay, time limits and graceful shutdown, end to end."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from jobyard.demo import yard as demo_yard
from jobyard.errors import ActionTimeout
from jobyard.logs import ContextFilter
from jobyard.sdk import ActionContext, Yard
from tests.harness import stack


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_cancel_stops_waiting_actions_at_once_and_asks_running_ones(make_settings: Any) -> None:
    async with stack(make_settings(worker_concurrency=2), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.sleep", "payload": {"seconds": 30}}] * 2 + [{"type": "demo.noop"}] * 6)

        async def two_running() -> bool:
            return (await s.status(job_id))["progress"]["running"] == 2

        await wait_for(two_running)
        response = await s.http.post(f"/api/jobs/{job_id}/cancel")
        at_once = await s.status(job_id)

        async def all_final() -> bool:
            return all(a["status"] == "cancelled" for a in (await s.status(job_id))["actions"])

        await wait_for(all_final, timeout=15)  # the running two stop within the cancel grace
        final = await s.status(job_id)
        job = (await s.http.get(f"/api/jobs/{job_id}")).json()
        again = await s.http.post(f"/api/jobs/{job_id}/cancel")
    body = response.json()
    assert response.status_code == 200 and body["stopping_actions"] == 2
    assert body["cancelled_actions"] == 6
    assert at_once["status"] == "cancelled" and at_once["progress"]["cancelled"] == 6
    assert final["status"] == "cancelled" and job["finished_at"] is not None
    assert job["counters"]["cancelled"] == 8
    assert "while running" in final["actions"][0]["error"]
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


async def test_retry_and_replay_requeue_a_failed_action_with_more_attempts(make_settings: Any) -> None:
    yard = Yard()
    fixed = {"now": False}

    @yard.action("t.until_fixed", max_attempts=2)
    async def until_fixed(ctx: ActionContext, payload: Any) -> str:
        if not fixed["now"]:
            raise RuntimeError("device still broken")
        return f"ok on attempt {ctx.attempt}"

    async with stack(make_settings(), yard) as s:
        job_id = await s.submit([{"type": "t.until_fixed"}])
        failed = await s.wait(job_id)
        action_id = failed["actions"][0]["id"]
        retried = await s.http.post(f"/api/actions/{action_id}/retry")
        after_retry = await s.wait(job_id)
        fixed["now"] = True
        replayed = await s.http.post(f"/api/dead-letters/{action_id}/replay")
        after_replay = await s.wait(job_id)
        not_failed = await s.http.post(f"/api/dead-letters/{action_id}/replay")
        dead = (await s.http.get("/api/dead-letters")).json()["items"]
    assert failed["status"] == "failed" and failed["actions"][0]["attempts"] == 2
    assert retried.status_code == 202 and retried.json()["max_attempts"] == 3
    assert after_retry["status"] == "failed" and after_retry["actions"][0]["attempts"] == 3
    assert replayed.status_code == 202 and replayed.json()["max_attempts"] == 5  # a fresh budget of 2
    assert after_replay["status"] == "succeeded" and after_replay["actions"][0]["result"] == "ok on attempt 4"
    assert not_failed.status_code == 409 and dead == []


async def test_soft_time_limit_interrupts_async_and_sync_handlers(make_settings: Any) -> None:
    yard = Yard()
    cleaned: list[str] = []

    @yard.action("t.async_slow", timeout=5, soft_timeout=0.3, max_attempts=1)
    async def async_slow(ctx: ActionContext, payload: Any) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaned.append("async")
            return "partial result after the soft limit"
        return "never"

    @yard.action("t.sync_slow", timeout=5, soft_timeout=0.3, max_attempts=1)
    def sync_slow(ctx: ActionContext, payload: Any) -> str:
        try:
            for _ in range(1000):
                time.sleep(0.01)
        except ActionTimeout:
            cleaned.append("sync")
            raise
        return "never"

    async with stack(make_settings(), yard) as s:
        job_id = await s.submit([{"type": "t.async_slow"}, {"type": "t.sync_slow"}])
        final = await s.wait(job_id)
    by_type = {a["type"]: a for a in final["actions"]}
    assert by_type["t.async_slow"]["status"] == "succeeded"
    assert by_type["t.async_slow"]["result"] == "partial result after the soft limit"
    assert by_type["t.sync_slow"]["status"] == "failed" and "soft time limit" in by_type["t.sync_slow"]["error"]
    assert sorted(cleaned) == ["async", "sync"]


async def test_the_hard_limit_abandons_a_handler_that_ignores_its_interruption(make_settings: Any) -> None:
    """An async handler that swallows its cancellation is abandoned at the hard limit and its slot is freed."""
    yard = Yard()
    release = asyncio.Event()
    interrupted: list[int] = []

    @yard.action("t.stubborn", timeout=0.3, max_attempts=1)
    async def stubborn(ctx: ActionContext, payload: Any) -> str:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                interrupted.append(1)
        return "late, and ignored"

    @yard.action("t.quick", max_attempts=1)
    async def quick(ctx: ActionContext, payload: Any) -> str:
        return "ran after the abandoned one"

    try:
        async with stack(make_settings(worker_concurrency=1), yard) as s:
            job_id = await s.submit([{"type": "t.stubborn"}, {"type": "t.quick"}])
            final = await s.wait(job_id)
            release.set()
            await asyncio.sleep(0.2)  # the abandoned handler returns now: its late result must change nothing
            after = await s.status(job_id)
    finally:
        release.set()
    by_type = {a["type"]: a for a in final["actions"]}
    assert by_type["t.stubborn"]["status"] == "failed" and interrupted
    assert "ActionTimeout" in by_type["t.stubborn"]["error"] and "0.3s" in by_type["t.stubborn"]["error"]
    assert by_type["t.quick"]["status"] == "succeeded"  # with concurrency 1: the stubborn one's slot was freed
    assert [a["status"] for a in after["actions"]] == [a["status"] for a in final["actions"]]


async def test_handler_log_records_name_their_job_and_action(make_settings: Any) -> None:
    """Records logged by a handler (async, or sync in its thread) carry the ids, with or without ``ctx.log``."""
    yard = Yard()
    user_log = logging.getLogger("tests.user_handler")

    @yard.action("t.logs_async")
    async def logs_async(ctx: ActionContext, payload: Any) -> None:
        user_log.warning("async handler speaking")
        ctx.log("async handler via ctx", level=logging.WARNING)

    @yard.action("t.logs_sync")
    def logs_sync(ctx: ActionContext, payload: Any) -> None:
        user_log.warning("sync handler speaking")

    records: list[logging.LogRecord] = []
    collector = logging.Handler(logging.WARNING)
    collector.addFilter(ContextFilter())
    collector.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(collector)
    try:
        async with stack(make_settings(), yard) as s:
            job_id = await s.submit([{"type": "t.logs_async"}, {"type": "t.logs_sync"}])
            final = await s.wait(job_id)
    finally:
        logging.getLogger().removeHandler(collector)
    ids = {a["type"]: a["id"] for a in final["actions"]}
    seen = {r.getMessage(): (r.job_id, r.action_id) for r in records if "handler" in r.getMessage()}  # type: ignore[attr-defined]
    assert seen == {
        "async handler speaking": (job_id, ids["t.logs_async"]),
        "async handler via ctx": (job_id, ids["t.logs_async"]),
        "sync handler speaking": (job_id, ids["t.logs_sync"]),
    }


async def test_graceful_shutdown_hands_back_unfinished_actions_without_using_attempts(make_settings: Any) -> None:
    settings = make_settings(worker_concurrency=4)
    async with stack(settings, demo_yard) as s:
        job_id = await s.submit(
            [{"type": "demo.sleep", "payload": {"seconds": 0.2}}, {"type": "demo.sleep", "payload": {"seconds": 20}}]
        )

        async def both_running() -> bool:
            return (await s.status(job_id))["progress"]["running"] == 2

        await wait_for(both_running)
        (worker,) = s.workers
        await worker.stop(grace=1.0)  # the short one finishes within the grace, the long one is handed back
        job = (await s.http.get(f"/api/jobs/{job_id}")).json()
    short, long = job["actions"]
    assert short["status"] == "succeeded"
    assert long["status"] == "queued" and "shut down" in long["error"]
    assert long["attempts"] == 1 and long["max_attempts"] == 4  # the interrupted attempt is not counted


async def test_the_same_message_twice_in_one_claim_batch_runs_the_attempt_once(make_settings: Any) -> None:
    """After a worker is killed, a redelivered message and its republished copy can land in one claim batch."""
    from collections import Counter

    from jobyard import messages
    from jobyard.model import ActionSpecIn
    from jobyard.worker import Worker, _Intake

    runs: Counter[tuple[str, int]] = Counter()
    dup = Yard("dup")

    @dup.action("dup.count", queue="held")
    async def count(ctx: Any, payload: Any) -> None:
        runs[(str(ctx.action_id), ctx.attempt)] += 1
        await asyncio.sleep(0.05)

    async with stack(make_settings(), dup, workers=0) as s:
        rt = s.runtime
        spec = ActionSpecIn("dup.count", "held", None, 3, 30.0)
        job, (action_id,) = await rt.repo.create_job(tenant_id="default", name=None, metadata={}, actions=[spec])
        body = messages.encode_action(action_id, job.id, spec.type, spec.queue, None, 3, 30.0)
        worker = Worker(
            settings=s.settings, repo=rt.repo, broker=rt.broker, results=rt.results, events=rt.events,
            yard=dup, queues=["nobody"],
        )  # fmt: skip
        await worker.start()
        try:
            for _ in range(2):
                await worker._free.acquire()
            await worker._claim_and_run([_Intake(m, None) for m in messages.unpack(messages.pack([body, body]))])
            final = (await s.wait(str(job.id)))["status"]
        finally:
            await worker.stop(grace=5)
    assert final == "succeeded"
    assert runs == Counter({(str(action_id), 1): 1}), runs


async def test_an_unexpected_error_while_completing_does_not_stop_the_worker_or_hang_its_shutdown(
    make_settings: Any,
) -> None:
    # No read cache: the injected bug replaces the whole publish, the completion's cache invalidation with it, so a
    # status read that happened to land while the action ran would stay cached as "running" for the cache's TTL.
    async with stack(make_settings(cache_ttl=0), demo_yard) as s:
        (worker,) = s.workers
        real = worker.events.publish
        calls = {"n": 0}

        async def publish_fails_once(events: Any, also: Any = None) -> None:
            if any(e["status"] == "succeeded" for e in events):
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("a bug after the commit")
            await real(events, also=also)

        worker.events.publish = publish_fails_once  # type: ignore[method-assign]
        first = await s.submit([{"type": "demo.noop"}])
        # recorded in the store before the error: the job is final all the same
        assert (await s.wait(first))["status"] == "succeeded"
        second = await s.submit([{"type": "demo.noop"}])
        assert (await s.wait(second))["status"] == "succeeded"  # the completion loop lived on
        started = time.monotonic()
        await worker.stop(grace=2)
        assert time.monotonic() - started < 5
    assert calls["n"] >= 2
