"""One command for the side-by-side benchmark: jobyard, Dramatiq and Celery, the same work, one run, ratios.

python -m benchmarks.run --jobs 1000 --actions 10 --workers 2 --peer-python PATH/TO/bench-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import BenchTimeout, add_setting_option, settings_env
from benchmarks.jobyard_side import REPO_ROOT, JobyardConfig, run_jobyard

SYSTEMS = ("jobyard", "dramatiq", "celery")
#: A difference in the host's steal between two systems' timed phases beyond which the table says so (a share).
STEAL_GAP = 0.05
#: Above this ratio between two systems' timed phases in the probe unit's median CPU time, the table warns.
SPEED_GAP = 1.15


def run_peer(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one peer in its own interpreter (the peers are bench-only dependencies, never jobyard's)."""
    if not args.peer_python:
        raise SystemExit(f"{system}: pass --peer-python (or set JOBYARD_BENCH_PEER_PYTHON) to a Python with it")
    command = [
        args.peer_python, "-m", "benchmarks.peers.run_peer", system,
        "--jobs", str(args.jobs), "--actions", str(args.actions), "--workers", str(args.workers),
        "--latency-samples", str(args.latency_samples), "--latency-interval-ms", str(args.latency_interval_ms),
        "--timeout", str(args.timeout), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=args.timeout + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_jobyard_side(args: argparse.Namespace) -> dict[str, Any]:
    cfg = JobyardConfig(
        jobs=args.jobs,
        actions=args.actions,
        workers=args.workers,
        concurrency=args.concurrency,
        message_actions=args.message_actions,
        submit_concurrency=args.submit_concurrency,
        submit_batch=args.submit_batch,
        submit_via=args.submit_via,
        api_processes=args.api_processes,
        latency_samples=args.latency_samples,
        latency_interval_ms=args.latency_interval_ms,
        status_rps=args.status_rps,
        status_seconds=args.status_seconds,
        status_while_busy=args.status_while_busy,
        timeout=args.timeout,
        pg_admin_url=args.pg_url,
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        db_prefix=args.db_prefix,
        queue_prefix=args.queue_prefix,
        profile_dir=args.profile_dir,
        extra_env=settings_env(args.setting),
    )
    return run_jobyard(cfg)


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'system':<10} {'actions/s':>10} {'elapsed s':>10} {'start p50 ms':>13} {'start p99 ms':>13} "
        f"{'workers RSS MiB':>16} {'largest MiB':>12} {'CPU ms/action':>14} {'cores busy':>11} {'host steal':>11} "
        f"{'CPU unit ms':>12}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lat = r.get("latency_ms", {})
        lines.append(
            f"{name:<10} {r['actions_per_s']:>10,.0f} {r['elapsed_s']:>10.3f} {lat.get('p50', float('nan')):>13.2f} "
            f"{lat.get('p99', float('nan')):>13.2f} {r.get('worker_peak_rss_mb', 0.0):>16.1f} "
            f"{r.get('worker_largest_rss_mb', 0.0):>12.1f} {cpu_per_action_ms(r):>14.3f} "
            f"{cpu_total_s(r) / r['elapsed_s'] if r['elapsed_s'] > 0 else float('nan'):>11.2f} "
            f"{_or_na(timed(r, 'host_steal_share'), '.1%'):>11} {_or_na(timed(r, 'cpu_unit_ms'), '.3f'):>12}"
        )
    jy = results.get("jobyard")
    if jy is not None:
        for name, r in results.items():
            if name != "jobyard" and r["actions_per_s"] > 0:
                lines.append(f"jobyard / {name}: {jy['actions_per_s'] / r['actions_per_s']:.2f}x throughput")
        known = {name: v for name, r in results.items() if (v := timed(r, "host_steal_share")) is not None}
        if len(known) > 1 and max(known.values()) - min(known.values()) > STEAL_GAP:
            # The systems run one after another: a host that took much more CPU in one system's timed phase than
            # in another's moved their ratio by itself.
            lines.append(
                "the host took unequal CPU in the timed phases ("
                + ", ".join(f"{name} {v:.1%}" for name, v in known.items())
                + "): these ratios are the host's as much as the systems'; compare runs with even steal"
            )
        units = {name: v for name, r in results.items() if (v := timed(r, "cpu_unit_ms")) is not None}
        if len(units) > 1 and max(units.values()) > SPEED_GAP * min(units.values()):
            # A slower CPU (with or without steal) makes every process's work cost more CPU time: the system timed
            # while it was slow loses by that much.
            lines.append(
                "the CPU ran at unequal speeds in the timed phases (a fixed unit of work took "
                + ", ".join(f"{name} {v:.3f} ms" for name, v in units.items())
                + " at the median): these ratios move with it; compare runs with even speeds"
            )
        details = jy["details"]
        settings = details["settings"]
        per_request = settings.get("submit_batch", 1)
        in_flight = settings.get("submit_concurrency")
        if settings.get("submit_via") == "client":
            coalesced = (details.get("throughput_phase_batches") or {}).get("jobs_per_submit_request")
            how = (
                f"one AsyncClient.submit() a job from {in_flight} callers, coalesced by the client "
                f"({_or_na(coalesced, '.1f')} jobs a request)"
            )
        else:
            how = (
                "one job a request (POST /api/jobs)"
                if per_request <= 1
                else f"{per_request} jobs a request (POST /api/jobs:batch)"
            )
            how += f", {in_flight} in flight"
        # When the last job is accepted only just before the last one finishes, the run measured how fast the
        # client's requests in flight were answered (the workers kept up), not how fast the workers can go.
        lines.append(
            f"jobyard submissions: {how}; all accepted at {details['submit_s']:.2f} s of {jy['elapsed_s']:.2f} s"
        )
        batches = details.get("throughput_phase_batches")
        if batches:
            jobs, claim, completion = (
                _or_na(batches[k], "g")
                for k in ("jobs_per_submit_statement", "actions_per_claim", "actions_per_completion")
            )
            lines.append(
                f"jobyard batches in the timed phase: {jobs} jobs a submit statement, {claim} actions a claim, "
                f"{completion} a completion"
            )
        rss = details["peak_rss_mb"]
        apis = details["settings"].get("api_processes", 1)
        api_rss = f"{rss['api']} (all {apis})" if apis > 1 else f"{rss['api']}"
        lines.append(
            f"jobyard peak RSS MiB: api {api_rss}, relay {rss['relay']}, workers {rss['workers_sum']} "
            f"(largest worker {rss['largest_worker']})"
        )
        lines.append(f"jobyard CPU s during the timed phase: {details['throughput_phase_cpu_s']}"
                     f" servers: {details['throughput_phase_server_cpu_s']}")  # fmt: skip
        by_client = details.get("throughput_phase_postgresql_by_client_s")
        if by_client:
            lines.append(f"PostgreSQL CPU s in the timed phase, by the process it served: {by_client}")
        status = jy.get("status_reads")
        if status:
            lines.append(
                f"jobyard status reads: {status['achieved_rps']:.0f}/s (target {status['target_rps']:.0f}), "
                f"p50 {status['latency_ms']['p50']:.2f} ms, p99 {status['latency_ms']['p99']:.2f} ms, "
                f"errors {status['errors']}; {_served(status)}; CPU s meanwhile {status['cpu_s']}; "
                f"host steal {_or_na(status.get('host_steal_share'), '.1%')}"
            )
            machine = status.get("machine")
            if machine:
                lines.append(
                    f"the machine meanwhile (benchmarks.machine_probe): {machine['slow_units']} of {machine['units']} "
                    f"runs of a {machine['baseline_ms']:.2f} ms unit of work took over {machine['slow_factor']:g}x "
                    f"that, {machine['extra_ms']:.0f} ms in all, the worst {machine['worst_ms']:.2f} ms; "
                    f"reads over 5 ms that came within 60 ms after one: {_share(machine['slow_reads_after_slow_cpu'])}"
                    f" (other reads: {_share(machine['other_reads_after_slow_cpu'])})"
                )
        busy = jy.get("status_reads_while_busy")
        if busy:
            lines.append(
                f"jobyard status reads while a second batch runs: {busy['achieved_rps']:.0f}/s, "
                f"p50 {busy['latency_ms']['p50']:.2f} ms, p99 {busy['latency_ms']['p99']:.2f} ms, "
                f"errors {busy['errors']}, {busy['unfinished_share']:.0%} of reads of unfinished jobs; "
                f"{_served(busy)}; the batch ran at {busy['batch_actions_per_s']:,.0f} actions/s; "
                f"host steal {_or_na(busy.get('host_steal_share'), '.1%')}"
            )
    return "\n".join(lines)


def timed(r: dict[str, Any], measure: str) -> float | None:
    """A measure of a system's timed phase: ``host_steal_share`` (``benchmarks.common.HostSteal``) or
    ``cpu_unit_ms`` (``benchmarks.common.CpuProbe``); None for a result from before it was taken, or a failed probe."""
    value: float | None = r.get("details", {}).get(measure, {}).get("throughput")
    return value


def _or_na(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or "n/a" where it was not measured (or there was nothing to count)."""
    return "n/a" if value is None else format(value, spec)


def _served(reads: dict[str, Any]) -> str:
    """How the API served a phase's reads: its own copy, Redis, the store (a recompute), Redis bypassed."""
    served = reads.get("served")
    if not served:
        return "served: unknown"
    return (
        f"served from the API's own copy {served['local_hits_share']:.0%}, from Redis {served['hits_share']:.0%}, "
        f"recomputed {served['misses_share']:.0%}"
        + (f", Redis bypassed {served['bypassed_share']:.0%}" if served["bypassed"] else "")
    )


def cpu_total_s(r: dict[str, Any]) -> float:
    """CPU seconds of the timed phase, everything counted: the system's processes, the client, the servers."""
    details = r.get("details", {})
    processes = details.get("throughput_phase_cpu_s", {})
    servers = details.get("throughput_phase_server_cpu_s", {})
    return float(sum(processes.values()) + sum(servers.values()))


def cpu_per_action_ms(r: dict[str, Any]) -> float:
    actions = r["jobs"] * r["actions_per_job"]
    return cpu_total_s(r) / actions * 1000.0 if actions else float("nan")


def _share(value: float | None) -> str:
    return "none to count" if value is None else f"{value:.0%}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--actions", type=int, default=10, help="no-op actions per job")
    p.add_argument("--workers", type=int, default=2, help="worker processes, the same for every system")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--peer-python", default=os.environ.get("JOBYARD_BENCH_PEER_PYTHON"),
                   help="interpreter with celery and dramatiq (benchmarks/peers/requirements.txt)")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=None, help="jobyard: actions at once per worker process")
    p.add_argument("--message-actions", type=int, default=None, help="jobyard: actions packed per broker message")
    p.add_argument("--submit-concurrency", type=int, default=8,
                   help="jobyard: HTTP submissions in flight (--submit-via client: callers of submit())")  # fmt: skip
    p.add_argument("--submit-batch", type=int, default=1,
                   help="jobyard: jobs per request (1: POST /api/jobs each; more: POST /api/jobs:batch)")  # fmt: skip
    p.add_argument("--submit-via", choices=("http", "client"), default="http",
                   help="jobyard: the driver's own HTTP requests, or jobyard's AsyncClient, one submit() a job from "
                        "--submit-concurrency callers (the client coalesces concurrent calls)")  # fmt: skip
    p.add_argument("--api-processes", type=int, default=1,
                   help="jobyard: API processes, each request to the next (as behind a load balancer)")  # fmt: skip
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--latency-interval-ms", type=float, default=10.0)
    p.add_argument("--status-rps", type=float, default=1000.0, help="jobyard: status reads per second (0: skip)")
    p.add_argument("--status-seconds", type=float, default=5.0)
    p.add_argument("--status-while-busy", action=argparse.BooleanOptionalAction, default=True,
                   help="jobyard: also read statuses at --status-rps while a second N x K batch runs")  # fmt: skip
    p.add_argument("--timeout", type=float, default=300.0, help="bound on each system's run, seconds")
    p.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--amqp-url", default=os.environ.get("BENCH_JOBYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_JOBYARD_REDIS_URL", "redis://127.0.0.1:6379/12"))
    p.add_argument("--db-prefix", default=os.environ.get("BENCH_DB_PREFIX", "jobyard_bench"))
    p.add_argument("--queue-prefix", default=os.environ.get("BENCH_QUEUE_PREFIX", "jobyard-bench"))
    add_setting_option(p)
    p.add_argument("--profile-dir", default=None, help="jobyard: py-spy speedscope profiles of every process")
    p.add_argument("--json", action="store_true", help="print one JSON object (the table goes to stderr)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, Any]] = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    failed: dict[str, str] = {}
    for system in systems:
        print(f"running {system} ...", file=sys.stderr)
        try:
            results[system] = run_jobyard_side(args) if system == "jobyard" else run_peer(system, args)
        except (BenchTimeout, RuntimeError) as exc:
            # One system failing (a server restarted mid-run, a timeout) must not throw away the others' numbers.
            failed[system] = str(exc)[-2000:]
            print(f"error: {system}: {failed[system]}", file=sys.stderr)
    if not results:
        return 2
    report = table(results)
    if args.json:
        print(report, file=sys.stderr)
        ratios = {
            name: round(results["jobyard"]["actions_per_s"] / r["actions_per_s"], 3)
            for name, r in results.items()
            if name != "jobyard" and "jobyard" in results and r["actions_per_s"] > 0
        }
        report_json = {"started": started, "results": results, "jobyard_throughput_ratio": ratios, "failed": failed}
        print(json.dumps(report_json))
    else:
        print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
