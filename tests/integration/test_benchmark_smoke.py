"""CI smoke of the benchmark's jobyard side at a tiny size: it completes and reports numbers (no timing checks)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from benchmarks.jobyard_side import JobyardConfig, run_jobyard

from tests import services


def _config(**sizes: Any) -> JobyardConfig:
    """A tiny run on the test servers, one worker process."""
    for name in ("postgresql", "rabbitmq", "redis"):
        services.require(name)
    return JobyardConfig(
        workers=1,
        timeout=90.0,
        pg_admin_url=services.PG_ADMIN_URL,
        amqp_url=services.AMQP_URL,
        redis_url=services.REDIS_URL,
        db_prefix=f"{services.PG_DB_PREFIX}_bench",
        **sizes,
    )


def test_the_jobyard_benchmark_runs_the_real_processes_and_reports_its_numbers() -> None:
    config = _config(jobs=6, actions=3, latency_samples=3, latency_interval_ms=5.0, status_rps=50.0, status_seconds=0.2)
    result = run_jobyard(config)
    assert result["verified"] == {"actions": 18, "recorded": 18, "jobs_succeeded": 6}
    assert result["actions_per_s"] > 0 and result["elapsed_s"] > 0
    assert set(result["latency_ms"]) == {"p50", "p99"}
    assert result["status_reads"]["requests"] == 10 and result["status_reads"]["errors"] == 0
    assert _served_total(result["status_reads"]) == 10  # the API's /metrics counted each read once, by how served
    machine = result["status_reads"]["machine"]  # benchmarks.machine_probe ran alongside the reads
    assert machine["units"] > 0 and 0 <= machine["slow_units"] <= machine["units"] and machine["baseline_ms"] > 0
    for share in (machine["slow_reads_after_slow_cpu"], machine["other_reads_after_slow_cpu"]):
        assert share is None or 0 <= share <= 1

    busy = result["status_reads_while_busy"]  # a second batch of the same jobs, read while it runs
    assert busy["verified"] == {"actions": 18, "recorded": 18, "jobs_succeeded": 6}
    assert busy["errors"] == 0 and busy["batch_actions_per_s"] > 0 and 0 <= busy["unfinished_share"] <= 1
    assert _served_total(busy) == busy["requests"]
    assert result["details"]["peak_rss_mb"]["api"] > 0 and result["worker_peak_rss_mb"] > 0
    assert 0 < result["worker_largest_rss_mb"] <= result["worker_peak_rss_mb"]  # one of the processes in the sum
    # PostgreSQL's CPU split by the process each backend served: the workers' claims and completions, the API's
    # submissions, the driver's own polls; together no more than PostgreSQL's whole CPU in the phase.
    by_client = result["details"]["throughput_phase_postgresql_by_client_s"]
    assert set(by_client) == {"api", "workers", "relay", "driver", "other", "backends_ended"}
    assert all(v >= 0 for v in by_client.values())  # (a phase this short may round every share to 0.0 s)
    split = sum(v for k, v in by_client.items() if k != "backends_ended")
    assert split <= result["details"]["throughput_phase_server_cpu_s"]["postgresql"] + 0.05
    # The host's share of the machine's CPU time, phase by phase (None only where the system does not count it).
    steals = [*result["details"]["host_steal_share"].values(), result["status_reads"]["host_steal_share"],
              busy["host_steal_share"]]  # fmt: skip
    assert set(result["details"]["host_steal_share"]) == {"latency", "throughput"}
    assert all(share is None or 0 <= share <= 1 for share in steals)
    assert result["details"]["cpu_unit_ms"]["throughput"] > 0  # the CPU's speed in the timed phase
    # The batching in the timed phase alone, from the API's and the workers' metrics: its 6 jobs, its 18 actions.
    batches = result["details"]["throughput_phase_batches"]
    counts = batches["counts"]
    assert counts["submit_jobs"] == 6 and 1 <= counts["submit_statements"] <= 6
    assert counts["completed"] == 18 and counts["claimed"] >= 18  # (a duplicate delivery is claimed in vain)
    assert 1 <= batches["jobs_per_submit_statement"] <= 6 and 1 <= batches["actions_per_completion"] <= 18


def _served_total(reads: dict[str, Any]) -> int:
    """The phase's reads as the API counted them; their shares add up to 1 (when there were any)."""
    served, kinds = reads["served"], ("local_hits", "hits", "misses", "bypassed")
    total = int(sum(served[kind] for kind in kinds))
    assert total == 0 or abs(sum(served[f"{kind}_share"] for kind in kinds) - 1) < 0.01
    return total


def test_the_report_says_how_the_api_served_the_reads() -> None:
    from benchmarks.run import _served

    served = {"local_hits": 62, "hits": 2, "misses": 36, "bypassed": 0, "local_hits_share": 0.62, "hits_share": 0.02,
              "misses_share": 0.36, "bypassed_share": 0.0}  # fmt: skip
    assert _served({"served": served}) == "served from the API's own copy 62%, from Redis 2%, recomputed 36%"
    down = {**served, "bypassed": 5, "bypassed_share": 0.05}
    assert _served({"served": down}).endswith(", Redis bypassed 5%")
    assert _served({}) == "served: unknown"  # a result saved before the count was taken


def test_the_hosts_steal_is_its_share_of_all_cpu_time_since_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    import psutil
    from benchmarks.common import HostSteal

    linux = namedtuple("linux", "user nice system idle iowait irq softirq steal guest guest_nice")
    readings = iter(
        [
            linux(100, 0, 50, 800, 0, 0, 0, 50, 30, 0),  # guest time is inside user time already: not counted twice
            linux(170, 0, 80, 870, 0, 0, 0, 80, 40, 0),  # +200 s of CPU time in all, 30 of it taken by the host
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(readings))
    assert HostSteal().share() == 0.15

    other = namedtuple("other", "user nice system idle")  # a system that does not count steal
    monkeypatch.setattr(psutil, "cpu_times", lambda: other(1, 0, 1, 10))
    assert HostSteal().share() is None


def test_reads_are_set_beside_the_slow_moments_the_probe_found() -> None:
    from benchmarks.machine_probe import share_after_slow_cpu

    slow_at = [100.0, 200.0]
    # 60 ms before a read counts, and up to 10 ms after (the probe runs every 10 ms); further away does not
    assert share_after_slow_cpu([100.05, 200.0, 199.995, 100.07, 150.0, 199.98], slow_at) == 0.5
    assert share_after_slow_cpu([], slow_at) is None and share_after_slow_cpu([1.0], []) == 0.0


def test_the_jobyard_benchmark_can_submit_in_batches_including_a_last_partial_one() -> None:
    config = _config(jobs=7, actions=2, submit_batch=3, latency_samples=2, status_rps=0)
    result = run_jobyard(config)
    assert result["verified"] == {"actions": 14, "recorded": 14, "jobs_succeeded": 7}
    assert result["details"]["settings"]["submit_batch"] == 3
    batches = result["details"]["throughput_phase_batches"]  # three requests: three statements at most
    assert batches["counts"]["submit_jobs"] == 7 and batches["jobs_per_submit_statement"] >= 2.3


def test_the_jobyard_benchmark_can_submit_through_jobyards_client_which_coalesces_the_calls() -> None:
    config = _config(jobs=12, actions=2, submit_via="client", submit_concurrency=12, latency_samples=2, status_rps=0)
    result = run_jobyard(config)
    assert result["verified"] == {"actions": 24, "recorded": 24, "jobs_succeeded": 12}
    assert result["details"]["settings"]["submit_via"] == "client"
    batches = result["details"]["throughput_phase_batches"]
    # Twelve calls at once, two requests in flight at a time (the client's default): fewer requests than jobs.
    assert batches["counts"]["submit_jobs"] == 12 and 3 <= batches["counts"]["submit_requests"] < 12
    assert batches["jobs_per_submit_request"] == 12 / batches["counts"]["submit_requests"]


def test_the_client_mode_takes_one_api_process_and_one_job_a_call() -> None:
    from benchmarks.jobyard_side import JobyardBench

    for wrong in ({"submit_batch": 20}, {"api_processes": 2}, {"submit_via": "sdk"}):
        with pytest.raises(ValueError, match="submit"):
            JobyardBench(JobyardConfig(**({"submit_via": "client"} | wrong)))


def test_the_jobyard_benchmark_spreads_requests_over_several_api_processes() -> None:
    config = _config(jobs=6, actions=3, latency_samples=3, latency_interval_ms=5.0, status_rps=50.0,
                     status_seconds=0.2, status_while_busy=False, api_processes=2)  # fmt: skip
    result = run_jobyard(config)
    assert result["verified"] == {"actions": 18, "recorded": 18, "jobs_succeeded": 6}
    assert result["status_reads"]["errors"] == 0 and result["details"]["settings"]["api_processes"] == 2
    assert _served_total(result["status_reads"]) == 10  # both processes' counts


def test_round_robin_sends_each_request_to_the_next_api_in_turn() -> None:
    import asyncio

    from benchmarks.rawhttp import RawHttpPool, RoundRobinHttp

    class Recording(RawHttpPool):
        def __init__(self, name: str) -> None:
            super().__init__("127.0.0.1", 1, 1)
            self.name, self.paths = name, []

        async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
            self.paths.append(path)
            return 200, self.name.encode()

    first, second = Recording("a"), Recording("b")
    balancer = RoundRobinHttp([first, second])
    answers = asyncio.run(_gather([balancer.request("GET", f"/{i}") for i in range(5)]))
    assert [body for _, body in answers] == [b"a", b"b", b"a", b"b", b"a"]
    assert first.paths == ["/0", "/2", "/4"] and second.paths == ["/1", "/3"]


async def _gather(calls: list[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*calls))


@pytest.mark.parametrize("actions", [1, 3])
def test_the_submit_path_breakdown_runs_and_reports_each_leg(actions: int) -> None:
    import asyncio

    from benchmarks.submit_path import LEGS, measure

    result = asyncio.run(measure(5, 5.0, _config(), actions))  # it checks that every action was a sample
    assert list(result) == list(LEGS)
    # the legs are consecutive spans of one path: each at least 0 and none longer than the whole
    assert all(result[leg]["p50"] >= 0 for leg in LEGS[:3])
    assert result["submit → start"]["p99"] >= max(result[leg]["p50"] for leg in LEGS[:3])


def test_the_group_commit_benchmark_writes_every_job_in_every_mode() -> None:
    import asyncio

    from benchmarks.group_commit import measure, parse_args

    services.require("postgresql")
    args = parse_args(["--jobs", "20", "--actions", "3", "--groups", "1,4", "--rounds", "1"])
    args.pg_url, args.db_prefix = services.PG_ADMIN_URL, f"{services.PG_DB_PREFIX}_bench"
    result = asyncio.run(measure(args))
    assert result["stored"] == {"jobs": 240, "actions": 720}  # the warm-up's 200 and 20 per mode
    assert list(result["modes"]) == ["alone", "grouped by 4"]
    assert all(m[0]["jobs_per_s"] > 0 and m[0]["postgresql_cpu_us_per_job"] >= 0 for m in result["modes"].values())


@pytest.mark.parametrize("backlog", [False, True], ids=["keeping-up", "backlog"])
def test_the_hot_statements_benchmark_claims_and_completes_every_action(backlog: bool) -> None:
    import asyncio

    from benchmarks.hot_statements import measure, parse_args

    services.require("postgresql")
    args = parse_args(["--jobs", "10", "--actions", "3", "--batch", "4", *(["--backlog"] if backlog else [])])
    args.pg_url, args.db_prefix = services.PG_ADMIN_URL, f"{services.PG_DB_PREFIX}_bench"
    result = asyncio.run(measure(args))
    assert result["succeeded"] == 30 and result["backlog"] is backlog  # every job succeeded too, or it raises
    assert result["claim_ms_per_statement"] > 0 and result["completion_ms_per_statement"] > 0
    assert ("completion_postgresql_cpu_ms_per_statement" in result) is backlog


def test_the_publish_benchmark_delivers_every_message_in_both_modes() -> None:
    import uvloop
    from benchmarks.publish_batch import measure, parse_args

    services.require("rabbitmq")
    args = parse_args(["--messages", "40", "--batch", "10", "--rounds", "1", "--amqp-url", services.AMQP_URL])
    result = uvloop.run(measure(args))
    assert [r["mode"] for r in result["rounds"]] == ["one by one", "batched"]
    assert all(r["sent"] == r["queued"] == 40 and r["client_cpu_us"] > 0 for r in result["rounds"])


def test_the_durable_waits_benchmark_times_every_step_in_every_mode() -> None:
    import uvloop
    from benchmarks.durable_waits import COMMIT_MODES, HOP_MODES, measure, parse_args

    services.require("postgresql")
    services.require("rabbitmq")
    args = parse_args(["--samples", "5", "--interval-ms", "1", "--rounds", "1", "--amqp-url", services.AMQP_URL])
    args.pg_url, args.db_prefix = services.PG_ADMIN_URL, f"{services.PG_DB_PREFIX}_bench"
    result = uvloop.run(measure(args))
    assert list(result["commit_ms"]) == list(COMMIT_MODES) and list(result["hop_ms"]) == list(HOP_MODES)
    for step in (*result["commit_ms"].values(), *result["hop_ms"].values()):
        assert 0 < step["p50"] <= step["p99"]


def test_the_cache_drops_benchmark_reports_a_cost_for_each_number_of_copies_held() -> None:
    import asyncio

    from benchmarks.cache_drops import measure, parse_args

    args = parse_args(["--held", "0,50", "--announcements", "20", "--groups", "3", "--rounds", "1"])
    result = asyncio.run(measure(args))
    assert [row["held"] for row in result["rows"]] == [0, 50]
    assert all(row["cpu_us_per_announcement"] >= 0 for row in result["rows"])


def test_the_cache_miss_benchmark_times_misses_and_hits_and_counts_their_round_trips() -> None:
    import asyncio

    from benchmarks.cache_miss import measure, parse_args

    services.require("redis")
    result = asyncio.run(measure(parse_args(["--reads", "20", "--redis", services.REDIS_URL])))
    assert result["stats"]["misses"] == 21 and result["stats"]["hits"] == 20  # (the first read warms up)
    assert 0 < result["miss_us"]["p50"] <= result["miss_us"]["p99"]
    assert result["round_trips_per_miss"] == 2 and result["round_trips_per_hit"] == 1  # the miss's store included


def test_the_pubsub_benchmark_receives_every_message_in_both_protocols() -> None:
    import asyncio

    from benchmarks.pubsub_cost import measure, parse_args

    services.require("redis")
    result = asyncio.run(measure(parse_args(["--messages", "50", "--rounds", "1", "--redis", services.REDIS_URL])))
    (row,) = result["rounds"]  # each mode returns only once all 50 messages have arrived
    assert row["resp2_cpu_us_per_message"] > 0 and row["resp3_cpu_us_per_message"] > 0


def test_the_side_by_side_table_counts_every_process_and_server_in_each_systems_cpu() -> None:
    from benchmarks.run import cpu_per_action_ms, cpu_total_s, table

    peer = {
        "jobs": 100, "actions_per_job": 10, "elapsed_s": 2.0, "actions_per_s": 500.0, "latency_ms": {},
        "details": {"throughput_phase_cpu_s": {"workers": 1.5, "submitter": 0.5},
                    "throughput_phase_server_cpu_s": {"postgresql": 0.0, "rabbitmq": 0.75, "redis": 0.25}},
    }  # fmt: skip
    assert cpu_total_s(peer) == 3.0 and cpu_per_action_ms(peer) == 3.0  # 3 CPU-s over 1,000 actions
    row = next(line for line in table({"dramatiq": peer}).splitlines() if line.startswith("dramatiq"))
    # CPU ms per action, cores busy (3 CPU-s in 2 s), the host's steal and the CPU's speed (a result from before
    # they were measured)
    assert row.split()[-4:] == ["3.000", "1.50", "n/a", "n/a"]
    peer["details"]["host_steal_share"] = {"latency": 0.0, "throughput": 0.125}
    row = next(line for line in table({"dramatiq": peer}).splitlines() if line.startswith("dramatiq"))
    assert row.split()[-2] == "12.5%"
    assert cpu_total_s({"details": {}}) == 0.0  # a result from before the servers were counted


def _reported(**details: Any) -> dict[str, Any]:
    """A result as the table reads it: 1,000 actions in 2 s, one job a request, with ``details`` on top."""
    return {
        "jobs": 100, "actions_per_job": 10, "elapsed_s": 2.0, "actions_per_s": 500.0, "latency_ms": {},
        "details": {"settings": {"submit_batch": 1, "submit_concurrency": 8, "api_processes": 1}, "submit_s": 1.0,
                    "throughput_phase_cpu_s": {}, "throughput_phase_server_cpu_s": {},
                    "peak_rss_mb": {"api": 1.0, "relay": 1.0, "workers_sum": 2.0, "largest_worker": 1.0}, **details},
    }  # fmt: skip


def test_the_side_by_side_table_warns_when_the_host_took_unequal_cpu_from_the_systems() -> None:
    from benchmarks.run import table

    def result(steal: float | None) -> dict[str, Any]:
        return _reported(host_steal_share={"latency": 0.0, "throughput": steal})

    warning = "the host took unequal CPU in the timed phases (jobyard 1.0%, dramatiq 12.5%)"
    assert warning in table({"jobyard": result(0.01), "dramatiq": result(0.125)})
    assert "unequal" not in table({"jobyard": result(0.09), "dramatiq": result(0.125)})  # within 5 points
    assert "unequal" not in table({"jobyard": result(None), "dramatiq": result(0.125)})  # nothing to compare


def test_the_side_by_side_table_says_how_jobyard_was_submitted_to_and_when_submitting_ended() -> None:
    from benchmarks.run import table

    def jobyard(batch: int, submit_s: float) -> dict[str, Any]:
        settings = {"submit_batch": batch, "submit_concurrency": 8, "api_processes": 1}
        return _reported(settings=settings, submit_s=submit_s)

    def line(result: dict[str, Any]) -> str:
        return next(x for x in table({"jobyard": result}).splitlines() if x.startswith("jobyard submissions"))

    assert line(jobyard(1, 1.96)) == (
        "jobyard submissions: one job a request (POST /api/jobs), 8 in flight; all accepted at 1.96 s of 2.00 s"
    )
    assert line(jobyard(20, 0.5)).startswith("jobyard submissions: 20 jobs a request (POST /api/jobs:batch), 8 in")
    through_client = _reported(
        settings={"submit_batch": 1, "submit_concurrency": 64, "submit_via": "client"},
        submit_s=1.5,
        throughput_phase_batches={
            "jobs_per_submit_request": 11.24,
            "jobs_per_submit_statement": 18.5,
            "actions_per_claim": 60.6,
            "actions_per_completion": 86.2,
        },
    )
    assert line(through_client) == (
        "jobyard submissions: one AsyncClient.submit() a job from 64 callers, coalesced by the client (11.2 jobs a "
        "request); all accepted at 1.50 s of 2.00 s"
    )


def test_the_side_by_side_table_says_how_large_jobyards_batches_were() -> None:
    from benchmarks.run import table

    assert "batches" not in table({"jobyard": _reported()})  # a result from before they were read
    batches = {"jobs_per_submit_statement": None, "actions_per_claim": 34.1, "actions_per_completion": 36.0}
    assert "jobyard batches in the timed phase: n/a jobs a submit statement, 34.1 actions a claim, 36 a completion" in (
        table({"jobyard": _reported(throughput_phase_batches=batches)})
    )


def test_the_cpu_probe_times_its_unit_until_stopped() -> None:
    from benchmarks.common import CpuProbe

    probe = CpuProbe().start()
    time.sleep(0.3)
    median = probe.stop()
    assert median is not None and 0 < median < 100  # ms of CPU time for a fixed unit, whatever the machine
    assert probe.stop() is None  # stopped already: nothing more to report


def test_the_side_by_side_table_warns_when_the_cpu_ran_at_unequal_speeds() -> None:
    from benchmarks.run import table

    def result(unit_ms: float | None) -> dict[str, Any]:
        return _reported(cpu_unit_ms={"throughput": unit_ms})

    report = table({"jobyard": result(0.3), "dramatiq": result(0.4)})
    assert next(x for x in report.splitlines() if x.startswith("jobyard ")).split()[-1] == "0.300"
    warning = "the CPU ran at unequal speeds in the timed phases (a fixed unit of work took jobyard 0.300 ms, dramatiq"
    assert warning + " 0.400 ms at the median)" in report
    assert "unequal speeds" not in table({"jobyard": result(0.3), "dramatiq": result(0.34)})  # within 15 %
    assert "unequal speeds" not in table({"jobyard": result(0.3), "dramatiq": result(None)})  # nothing to compare
