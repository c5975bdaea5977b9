"""A job of many actions, end to end through API, store, relay, broker, worker and KV."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from jobyard.demo import yard as demo_yard
from jobyard.kv import keys
from jobyard.sdk import ActionContext, Yard
from tests.harness import stack


async def test_a_job_of_three_actions_succeeds_with_full_progress(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit(
            [
                {"type": "demo.noop", "payload": {"device": "olt-001"}},
                {"type": "demo.sleep", "payload": {"seconds": 0.3}},
                {"type": "demo.noop", "payload": [1, 2, 3]},
            ],
            name="three",
        )
        final = await s.wait(job_id)
    assert final["status"] == "succeeded"
    assert final["progress"]["percent"] == 100.0 and final["progress"]["succeeded"] == 3
    assert [a["status"] for a in final["actions"]] == ["succeeded"] * 3
    assert final["actions"][0]["result"] == {"device": "olt-001"}
    assert final["actions"][1]["result"] == {"slept": 0.3}
    assert all(a["attempts"] == 1 and a["started_at"] and a["finished_at"] for a in final["actions"])


async def test_a_flaky_action_succeeds_on_its_third_attempt(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.flaky", "payload": {"fail_times": 2}, "max_attempts": 3}])
        final = await s.wait(job_id)
    (action,) = final["actions"]
    assert final["status"] == "succeeded"
    assert action["attempts"] == 3 and action["result"] == {"succeeded_on_attempt": 3}


async def test_a_failing_action_fails_the_job_while_the_others_succeed(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit(
            [
                {"type": "demo.noop", "payload": 1},
                {"type": "demo.fail", "payload": {"message": "optical module missing"}},
                {"type": "demo.sleep", "payload": {"seconds": 0.2}},
            ]
        )
        final = await s.wait(job_id)
        dead = (await s.http.get("/api/dead-letters", params={"type": "demo.fail"})).json()["items"]
    assert final["status"] == "failed"
    statuses = {a["type"]: a for a in final["actions"]}
    assert statuses["demo.noop"]["status"] == statuses["demo.sleep"]["status"] == "succeeded"
    failed = statuses["demo.fail"]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert "optical module missing" in failed["error"]
    assert [d["id"] for d in dead] == [failed["id"]]


async def test_results_come_from_the_kv_and_fall_back_to_the_store(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.noop", "payload": {"big": "x" * 10_000}}])
        final = await s.wait(job_id)
        action_id = final["actions"][0]["id"]
        cached = (await s.http.get(f"/api/results/{action_id}")).json()
        ttl = await s.runtime.kv.ttl(keys.result(action_id))
        await s.runtime.kv.delete(keys.result(action_id))
        fallback = (await s.http.get(f"/api/results/{action_id}")).json()
    assert cached["source"] == "cache" and cached["result"] == {"big": "x" * 10_000}
    assert ttl is not None and 0 < ttl <= 3600
    assert fallback["source"] == "store" and fallback["result"]["_jobyard_truncated"] is True


async def test_sync_handlers_run_in_threads_and_report_progress(make_settings: Any) -> None:
    yard = Yard()
    seen: list[str] = []

    @yard.action("t.sync")
    def blocking(ctx: ActionContext, payload: Any) -> str:
        for i in range(3):
            time.sleep(0.15)
            ctx.progress((i + 1) / 3, f"step {i + 1}")
        seen.append(ctx.idempotency_key)
        return "done"

    async with stack(make_settings(), yard) as s:
        job_id = await s.submit([{"type": "t.sync"}])
        progressed = False
        for _ in range(100):
            status = await s.status(job_id)
            if status["actions"][0]["status"] == "running" and status["actions"][0]["progress"] > 0:
                progressed = True
            if status["status"] == "succeeded":
                break
            await asyncio.sleep(0.03)
        final = await s.wait(job_id)
    assert progressed, "progress was never visible while the action ran"
    assert final["actions"][0]["result"] == "done"
    assert seen == [f"{final['actions'][0]['id']}:1"]


async def test_the_hard_time_limit_abandons_the_attempt(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.sleep", "payload": {"seconds": 5}, "timeout": 0.2, "max_attempts": 2}])
        final = await s.wait(job_id)
    action = final["actions"][0]
    assert final["status"] == "failed" and action["attempts"] == 2
    assert "ActionTimeout" in action["error"] and "0.2s" in action["error"]


async def test_many_jobs_over_two_workers_all_succeed_once(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard, workers=2) as s:
        ids = await asyncio.gather(*(s.submit([{"type": "demo.noop", "payload": i}] * 3) for i in range(40)))
        finals = [await s.wait(job_id) for job_id in ids]
        processed = [w.processed for w in s.workers]
    assert all(f["status"] == "succeeded" for f in finals)
    assert all(a["attempts"] == 1 for f in finals for a in f["actions"])
    assert sum(processed) == 120


async def test_duplicate_and_malformed_messages_change_nothing(make_settings: Any) -> None:
    from jobyard import messages

    async with stack(make_settings(), demo_yard) as s:
        job_id = await s.submit([{"type": "demo.noop", "payload": "once"}])
        final = await s.wait(job_id)
        action = final["actions"][0]
        copy = messages.pack(
            [messages.encode_action(uuid.UUID(action["id"]), uuid.UUID(job_id), "demo.noop", "default", "x", 3, 5)]
        )
        await s.runtime.broker.publish([("default", copy), ("default", copy), ("default", b"\x00garbage")])
        follow_up = await s.submit([{"type": "demo.noop"}])  # the queue still flows
        await s.wait(follow_up)
        again = await s.status(job_id)
        processed = sum(w.processed for w in s.workers)
        broker: Any = s.runtime.broker
        if hasattr(broker, "dead"):  # in memory: the parked body and its reason are inspectable
            dead_reasons = [reason for _, reason in broker.dead]
        else:
            await asyncio.sleep(0.3)
            dead_reasons = ["malformed"] * (await broker.queue_depths(["dead-letters"]))["dead-letters"]
    assert again["actions"][0]["attempts"] == 1 and again["actions"][0]["result"] == "once"
    assert processed == 2
    assert len(dead_reasons) == 1 and dead_reasons[0].startswith("malformed")


async def test_an_action_type_unknown_to_the_worker_is_dead_lettered_at_once(make_settings: Any) -> None:
    from jobyard.model import ActionSpecIn

    async with stack(make_settings(), demo_yard) as s:
        # Stored by an API whose registry differs from the worker's (a deployment mismatch).
        job, _ = await s.runtime.repo.create_job(
            tenant_id="default", name=None, metadata={}, actions=[ActionSpecIn("ghost.type", "default", {}, 5, 10.0)]
        )
        final = await s.wait(str(job.id))
        dead = (await s.http.get("/api/dead-letters", params={"type": "ghost.type"})).json()["items"]
    (action,) = final["actions"]
    assert final["status"] == "failed" and action["attempts"] == 1
    assert "UnknownActionType" in action["error"] and "ghost.type" in action["error"]
    assert [d["id"] for d in dead] == [action["id"]]
