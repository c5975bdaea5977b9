"""Deduplication and concurrency keys, end to end on both stacks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jobyard.demo import yard as demo_yard
from jobyard.sdk import ActionContext, Yard
from tests.harness import stack


async def test_idempotency_key_returns_the_same_job_and_refuses_another_body(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        body = {"actions": [{"type": "demo.noop", "payload": 1}]}
        headers = {"Idempotency-Key": "order-42"}
        first, again = await asyncio.gather(  # a client retrying while its first try is in flight
            s.http.post("/api/jobs", json=body, headers=headers),
            s.http.post("/api/jobs", json=body, headers=headers),
        )
        other = await s.http.post("/api/jobs", json={"actions": [{"type": "demo.noop", "payload": 2}]}, headers=headers)
        jobs = (await s.http.get("/api/jobs")).json()["items"]
    assert sorted(r.status_code for r in (first, again)) == [200, 202]
    assert first.json()["id"] == again.json()["id"] and len(jobs) == 1
    assert other.status_code == 409 and "order-42" in other.json()["detail"]


async def test_content_checksum_window_collapses_identical_submissions(make_settings: Any) -> None:
    async with stack(make_settings(), demo_yard) as s:
        body = {"name": "import 2026-11-23.csv", "actions": [{"type": "demo.noop"}], "dedup_window": 60}
        one = await s.http.post("/api/jobs", json=body)
        two = await s.http.post("/api/jobs", json=body)
        changed = await s.http.post("/api/jobs", json={**body, "name": "another file"})
        unwindowed = await s.http.post("/api/jobs", json={k: v for k, v in body.items() if k != "dedup_window"})
    assert one.status_code == 202 and two.status_code == 200 and two.json()["id"] == one.json()["id"]
    assert two.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 202 and changed.json()["id"] != one.json()["id"]
    assert unwindowed.status_code == 202


async def test_actions_with_one_concurrency_key_never_overlap_across_workers(make_settings: Any) -> None:
    yard = Yard()
    spans: list[tuple[float, float, str]] = []

    @yard.action("olt.configure", concurrency_key=lambda p: p["device"])
    async def configure(ctx: ActionContext, payload: Any) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.05)
        spans.append((started, time.monotonic(), payload["device"]))

    async with stack(make_settings(), yard, workers=3) as s:
        job_id = await s.submit(
            [{"type": "olt.configure", "payload": {"device": "olt-001"}}] * 20
            + [{"type": "olt.configure", "payload": {"device": f"olt-{i:03d}"}} for i in range(2, 6)]
            + [{"type": "olt.configure", "payload": {"device": "olt-900"}, "concurrency_limit": 2}] * 6
        )
        final = await s.wait(job_id, timeout=60)
    assert final["status"] == "succeeded"
    assert all(a["attempts"] == 1 for a in final["actions"])  # waiting never used an attempt

    def most_at_once(device: str) -> int:
        edges = sorted([(a, 1) for a, _, d in spans if d == device] + [(b, -1) for _, b, d in spans if d == device])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        return peak

    assert most_at_once("olt-001") == 1
    assert most_at_once("olt-900") <= 2
    assert len(spans) == 30


async def test_with_redis_unreachable_everything_still_works_from_the_store(make_settings: Any) -> None:
    from tests.conformance.test_cache_and_locks import DeadKV

    yard = Yard()
    fences: list[int] = []

    @yard.action("olt.locked", concurrency_key="olt-001")
    async def locked(ctx: ActionContext, payload: Any) -> str:
        async with ctx.lock("olt:olt-001", ttl=5) as lock:
            fences.append(lock.fence)
        return lock.backend

    settings = make_settings(rate_limits="submit=3/minute", rate_limit_fallback="local")
    async with stack(settings, yard, workers=2, kv=DeadKV()) as s:
        ready = (await s.http.get("/readyz")).json()
        job_id = await s.submit([{"type": "olt.locked"}] * 5)
        final = await s.wait(job_id, timeout=30)
        limited = [
            (await s.http.post("/api/jobs", json={"actions": [{"type": "olt.locked"}]})).status_code for _ in range(3)
        ]
        result = (await s.http.get(f"/api/results/{final['actions'][0]['id']}")).json()
    assert ready["status"] == "degraded" and ready["checks"]["redis"].startswith("down")
    assert final["status"] == "succeeded" and [a["result"] for a in final["actions"]] == ["store"] * 5
    assert sorted(fences) == fences and len(set(fences)) == len(fences) >= 5  # one holder at a time
    assert limited == [202, 202, 429]  # the per-process limiter took over: 3 per minute, one already used
    assert result["source"] == "store" and result["result"] == "store"
