"""Where submit-to-start time goes: jobs sent one at a time at a steady pace (one action each by default), in legs.

    python -m benchmarks.submit_path --jobs 400 --interval-ms 10
    python -m benchmarks.submit_path --jobs 400 --interval-ms 5 --actions 10    # steady load: 2,000 actions/s

Runs the same processes as ``benchmarks.run`` (API, relay, 2 workers on the real servers) and takes three clocks
of the same machine: the client's send time, PostgreSQL's ``created_at`` of the job and ``started_at`` of the
action's claim (both ``statement_timestamp()``), and the handler's own start time (its result). Legs: HTTP send →
job row inserted (the API before its statement), inserted → claimed (commit, publish, delivery, the claim's
start), claimed → handler running (the claim's statement and commit, then the launch). p50 / p99 of each, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import orjson

from benchmarks.common import add_setting_option, p50_p99, settings_env
from benchmarks.jobyard_side import JobyardBench, JobyardConfig

LEGS = ("send → inserted", "inserted → claimed", "claimed → handler", "submit → start")


async def measure(
    jobs: int, interval_ms: float, config: JobyardConfig | None = None, actions: int = 1
) -> dict[str, dict[str, float]]:
    bench = JobyardBench(config or JobyardConfig())
    await bench.setup()
    try:
        await bench.warm_up()
        sent: list[tuple[float, str]] = []
        start = time.monotonic()
        for i in range(jobs):
            pause = start + i * interval_ms / 1000.0 - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            t_send = time.time()
            job = [{"type": "bench.stamp", "payload": i} for _ in range(actions)]
            sent.append((t_send, await bench.submit("submit-path", job)))
        await bench.wait_finished([job_id for _, job_id in sent], jobs)
        assert bench.db is not None
        rows = await bench.db.fetch(
            "SELECT a.job_id::text AS job_id, a.result, extract(epoch FROM j.created_at) AS created, "
            "extract(epoch FROM a.started_at) AS claimed "
            "FROM jobyard_actions a JOIN jobyard_jobs j ON j.id = a.job_id WHERE j.name = 'submit-path'"
        )
    finally:
        await bench.teardown()
    sent_at = {job_id: t_send for t_send, job_id in sent}
    if len(rows) != jobs * actions:
        raise RuntimeError(f"expected {jobs * actions} actions, found {len(rows)}")
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    for row in rows:
        t_send = sent_at[row["job_id"]]
        created, claimed = float(row["created"]), float(row["claimed"])
        handler = float(orjson.loads(row["result"])["started_at"])
        spans = ((t_send, created), (created, claimed), (claimed, handler), (t_send, handler))
        for leg, (a, b) in zip(LEGS, spans, strict=True):
            legs[leg].append((b - a) * 1000.0)
    return {leg: p50_p99(values) for leg, values in legs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=400)
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--actions", type=int, default=1, help="actions per job (each is a sample)")
    add_setting_option(p)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    config = JobyardConfig(extra_env=settings_env(args.setting))
    result = asyncio.run(measure(args.jobs, args.interval_ms, config, args.actions))
    if args.json:
        print(json.dumps(result))
        return
    for leg, values in result.items():
        print(f"{leg:<20} p50 {values['p50']:7.2f} ms   p99 {values['p99']:7.2f} ms")


if __name__ == "__main__":
    main()
