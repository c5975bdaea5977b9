"""Benchmark Celery or Dramatiq on this machine, for a side-by-side comparison with jobyard.

Starts the peer's workers, times N jobs x K no-op actions, start latency and peak RSS; cleans up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import psutil

from benchmarks.common import (
    REPO_ROOT,
    BenchTimeout,
    CpuProbe,
    Deadline,
    HostSteal,
    cpu_seconds,
    percentile,
    server_pids,
)

# --------------------------------------------------------------------------- peers


class Peer(ABC):
    """What the runner needs from a peer system: workers, submission, results, cleanup."""

    name: str

    @abstractmethod
    def worker_commands(self, workers: int, threads: int) -> list[list[str]]:
        """Commands to start, each one a long-running worker (process tree)."""

    @abstractmethod
    def expected_consumers(self, workers: int) -> int:
        """How many consumers on the task queue mean that every worker is up."""

    @abstractmethod
    def prepare(self) -> None:
        """Declare the queue(s), drop any messages and stale result keys."""

    @abstractmethod
    def consumer_count(self) -> int:
        """Consumers currently attached to the task queue."""

    @abstractmethod
    def submit_job(self, payloads: Sequence[Any]) -> Any:
        """Send one job: one message per payload. Returns a handle for wait_job."""

    @abstractmethod
    def wait_job(self, handle: Any, deadline: Deadline) -> list[Any]:
        """Block until every action of the job has its result stored; return them."""

    @abstractmethod
    def submit_stamp(self, payload: Any) -> Any:
        """Send one action that records its start time. Returns a handle."""

    @abstractmethod
    def wait_stamp(self, handle: Any, deadline: Deadline) -> float:
        """The wall-clock start time recorded by a stamp action."""

    @abstractmethod
    def cleanup(self) -> None:
        """Delete the queues, exchanges and result keys this run made."""

    @abstractmethod
    def settings(self, workers: int, threads: int) -> dict[str, Any]:
        """Configuration facts worth recording alongside the numbers."""


def _delete_keys(url: str, pattern: str) -> int:
    """Delete every Redis key matching pattern; returns how many were removed."""
    import redis

    client = redis.Redis.from_url(url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(client.unlink(*batch))
    finally:
        client.close()
    return removed


class CeleryPeer(Peer):
    """Celery 5, prefork pool, RabbitMQ broker, Redis result backend.

    Layout "single" (default) is one worker node with ``-c W``: the W pool children
    execute tasks while the node's parent process does the AMQP I/O. That is the usual
    way Celery is deployed, and it has the same shape as ``dramatiq -p W`` (one
    supervisor plus W executing children), so it is the fairest like-for-like choice.
    Layout "multi" (W nodes with ``-c 1``) is available for comparison; it doubles the
    process count (W parents + W children), which on a 2-core box mostly adds overhead.

    A job is a Celery ``group`` of K ``noop`` signatures: the native way to send K
    related tasks and wait for all of them (``GroupResult.get`` joins natively on Redis).
    """

    name = "celery"

    def __init__(self, layout: str) -> None:
        from benchmarks.peers import celery_app

        self.mod = celery_app
        self.app = celery_app.app
        self.layout = layout

    def worker_commands(self, workers: int, threads: int) -> list[list[str]]:
        base = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.peers.celery_app",
            "worker",
            "-P",
            "prefork",
            "-Q",
            self.mod.QUEUE,
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if self.layout == "single":
            return [[*base, "-c", str(workers), "-n", f"jobyard-bench-0@{platform.node()}"]]
        return [[*base, "-c", "1", "-n", f"jobyard-bench-{i}@{platform.node()}"] for i in range(workers)]

    def expected_consumers(self, workers: int) -> int:
        return 1 if self.layout == "single" else workers

    def _queue(self) -> Any:
        return self.app.amqp.queues[self.mod.QUEUE]

    def prepare(self) -> None:
        with self.app.connection_for_write() as conn:
            bound = self._queue()(conn.default_channel)
            bound.declare()
            bound.purge()
        _delete_keys(self.mod.REDIS_URL, self.mod.KEY_PREFIX + "*")

    def consumer_count(self) -> int:
        with self.app.connection_for_write() as conn:
            ok = conn.default_channel.queue_declare(queue=self.mod.QUEUE, passive=True)
            return int(ok.consumer_count)

    def submit_job(self, payloads: Sequence[Any]) -> Any:
        from celery import group

        return group(self.mod.noop.s(p) for p in payloads).apply_async()

    def wait_job(self, handle: Any, deadline: Deadline) -> list[Any]:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            return list(handle.get(timeout=deadline.remaining(), propagate=True))
        except CeleryTimeout as exc:
            raise BenchTimeout(f"celery: results not in by the deadline ({exc})") from exc

    def submit_stamp(self, payload: Any) -> Any:
        return self.mod.stamp.delay(payload)

    def wait_stamp(self, handle: Any, deadline: Deadline) -> float:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            return float(handle.get(timeout=deadline.remaining())["started_at"])
        except CeleryTimeout as exc:
            raise BenchTimeout(f"celery: result not in by the deadline ({exc})") from exc

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.app.backend.result_consumer.stop()
        with self.app.connection_for_write() as conn:
            chan = conn.default_channel
            chan.queue_delete(queue=self.mod.QUEUE)
            chan.exchange_delete(exchange=self.mod.QUEUE)
        _delete_keys(self.mod.REDIS_URL, self.mod.KEY_PREFIX + "*")

    def settings(self, workers: int, threads: int) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "pool": "prefork",
            "concurrency_per_node": workers if self.layout == "single" else 1,
            "prefetch_multiplier": self.app.conf.worker_prefetch_multiplier,
            "acks_late": self.app.conf.task_acks_late,
            "job_form": "celery.group of K noop signatures",
        }


class DramatiqPeer(Peer):
    """Dramatiq, ``-p W`` worker processes with ``-t T`` threads, RabbitMQ + Redis results.

    A job is a ``dramatiq.group`` of K ``noop`` messages (``group.run`` sends one message
    per action). Results are read per message from the Redis backend with a blocking
    get, which is what ``group.get_results`` does; the loop is written out only so that
    each wait honours the run's overall deadline.
    """

    name = "dramatiq"

    def __init__(self) -> None:
        from benchmarks.peers import dramatiq_app

        self.mod = dramatiq_app
        self.broker = dramatiq_app.broker
        self.backend = dramatiq_app.result_backend

    def _queues(self) -> list[str]:
        from dramatiq.common import dq_name, xq_name

        q = self.mod.QUEUE
        return [q, dq_name(q), xq_name(q)]

    def worker_commands(self, workers: int, threads: int) -> list[list[str]]:
        return [
            [
                sys.executable,
                "-m",
                "dramatiq",
                "benchmarks.peers.dramatiq_app",
                "-p",
                str(workers),
                "-t",
                str(threads),
                "-Q",
                self.mod.QUEUE,
            ]
        ]

    def expected_consumers(self, workers: int) -> int:
        return workers

    def prepare(self) -> None:
        self.broker.declare_queue(self.mod.QUEUE, ensure=True)
        self.broker.flush(self.mod.QUEUE)
        _delete_keys(self.mod.REDIS_URL, self.mod.RESULTS_NAMESPACE + ":*")

    def consumer_count(self) -> int:
        ok = self.broker.channel.queue_declare(queue=self.mod.QUEUE, passive=True)
        return int(ok.method.consumer_count)

    def submit_job(self, payloads: Sequence[Any]) -> Any:
        import dramatiq

        return dramatiq.group([self.mod.noop.message(p) for p in payloads]).run()

    def _get(self, message: Any, deadline: Deadline) -> Any:
        from dramatiq.results import ResultTimeout

        # Block in short slices: the backend blocks in whole seconds (<1 s means "don't
        # block"), and recent redis-py (8.x) gives every socket a 5 s read timeout, so one
        # long BRPOPLPUSH would die with a socket error instead of honouring the deadline.
        while True:
            timeout_ms = int(min(2.0, max(1.0, deadline.remaining())) * 1000)
            try:
                return message.get_result(backend=self.backend, block=True, timeout=timeout_ms)
            except ResultTimeout:
                continue  # deadline.remaining() raises BenchTimeout once time is up

    def wait_job(self, handle: Any, deadline: Deadline) -> list[Any]:
        return [self._get(m, deadline) for m in handle.children]

    def submit_stamp(self, payload: Any) -> Any:
        return self.mod.stamp.send(payload)

    def wait_stamp(self, handle: Any, deadline: Deadline) -> float:
        return float(self._get(handle, deadline)["started_at"])

    def cleanup(self) -> None:
        chan = self.broker.channel
        for name in self._queues():
            chan.queue_delete(queue=name)
        self.broker.close()
        _delete_keys(self.mod.REDIS_URL, self.mod.RESULTS_NAMESPACE + ":*")

    def settings(self, workers: int, threads: int) -> dict[str, Any]:
        from dramatiq.worker import QUEUE_PREFETCH

        return {
            "processes": workers,
            "threads_per_process": threads,
            "prefetch_per_process": QUEUE_PREFETCH or threads * 2,
            "job_form": "dramatiq.group of K noop messages",
        }


def make_peer(system: str, celery_layout: str) -> Peer:
    """Import the requested peer lazily, so only its packages need be installed."""
    if system == "celery":
        return CeleryPeer(celery_layout)
    return DramatiqPeer()


# --------------------------------------------------------------------------- workers


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the runner dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class WorkerFleet:
    """The worker process trees started for one run, and their teardown."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.procs: list[subprocess.Popen[bytes]] = []
        # Closed in stop(); it outlives any one block, so no context manager here.
        self.log = tempfile.TemporaryFile(prefix="jobyard-bench-workers-")  # noqa: SIM115
        self.seen: dict[int, psutil.Process] = {}

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("PYTHONUNBUFFERED", "1")
        for cmd in self.commands:
            # Own session: a Ctrl-C on the terminal reaches the runner only, which then
            # shuts workers down in order; the process group lets us kill stragglers.
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            self.procs.append(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited early with code {proc.returncode}:\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """Every live process of every worker tree (parents and pool children)."""
        out: list[psutil.Process] = []
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                root = self.seen.get(proc.pid) or psutil.Process(proc.pid)
                self.seen[proc.pid] = root
                tree = [root, *root.children(recursive=True)]
                for p in tree:
                    cached = self.seen.setdefault(p.pid, p)
                    out.append(cached)
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by all live worker processes."""
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def log_tail(self, limit: int = 4000) -> str:
        with contextlib.suppress(Exception):
            self.log.flush()
            self.log.seek(0)
            return self.log.read().decode(errors="replace")[-limit:]
        return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM each worker's main process, wait, then SIGKILL its group and leftovers."""
        leftovers = {p.pid: p for p in self.processes()}
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for p in leftovers.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running():
                    p.kill()
        self.log.close()


class RssSampler(threading.Thread):
    """Samples the RSS of all worker processes; keeps the peak of their sum and of any single one."""

    def __init__(self, fleet: WorkerFleet, interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.fleet = fleet
        self.interval = interval
        self.peak_bytes = 0
        self.peak_one = 0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = 0
        count = 0
        for p in self.fleet.processes():
            with contextlib.suppress(psutil.Error):
                rss = int(p.memory_info().rss)
                total += rss
                count += 1
                self.peak_one = max(self.peak_one, rss)
        if total > self.peak_bytes:
            self.peak_bytes = total
        self.peak_procs = max(self.peak_procs, count)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# --------------------------------------------------------------------------- phases


@dataclass
class Result:
    """Everything measured in one run."""

    system: str
    jobs: int
    actions_per_job: int
    workers: int
    elapsed_s: float = 0.0
    submit_s: float = 0.0
    worker_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # RabbitMQ, Redis (and PostgreSQL) meanwhile
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    worker_peak_rss_mb: float = 0.0  # the peak of the worker processes' summed RSS
    worker_largest_rss_mb: float = 0.0  # the peak RSS of any one worker process
    worker_processes: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    host_steal_share: dict[str, float | None] = field(default_factory=dict)  # by phase: latency, throughput
    cpu_unit_ms: dict[str, float | None] = field(default_factory=dict)  # by phase: the CPU's speed (CpuProbe)

    @property
    def actions(self) -> int:
        return self.jobs * self.actions_per_job

    @property
    def actions_per_s(self) -> float:
        return self.actions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "jobs": self.jobs,
            "actions_per_job": self.actions_per_job,
            "workers": self.workers,
            "elapsed_s": round(self.elapsed_s, 4),
            "actions_per_s": round(self.actions_per_s, 1),
            "latency_ms": self.latency_ms,
            "worker_peak_rss_mb": round(self.worker_peak_rss_mb, 1),
            "worker_largest_rss_mb": round(self.worker_largest_rss_mb, 1),
            "details": {
                "submit_s": round(self.submit_s, 4),
                "throughput_phase_cpu_s": {
                    "workers": round(self.worker_cpu_s, 2),
                    "submitter": round(self.client_cpu_s, 2),
                },
                "throughput_phase_server_cpu_s": {name: round(v, 2) for name, v in self.server_cpu_s.items()},
                "host_steal_share": self.host_steal_share,
                "cpu_unit_ms": self.cpu_unit_ms,
                "latency_samples": self.latency_samples,
                "worker_processes": self.worker_processes,
                "settings": self.settings,
                "versions": versions(self.system),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
        }


def versions(system: str) -> dict[str, str]:
    """Installed versions of the packages this peer runs on."""
    names = ["celery", "kombu", "amqp", "billiard"] if system == "celery" else ["dramatiq", "pika"]
    out: dict[str, str] = {}
    for name in [*names, "redis", "psutil"]:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def wait_ready(peer: Peer, fleet: WorkerFleet, workers: int, deadline: Deadline) -> None:
    """Wait until every worker consumes from the queue, then round-trip a warm-up batch."""
    want = peer.expected_consumers(workers)
    while True:
        fleet.check_alive()
        if peer.consumer_count() >= want:
            break
        time.sleep(min(0.2, deadline.remaining()))
    # Warm-up: imports, connections and pools are hot before anything is timed.
    handles = [peer.submit_job([{"warmup": i, "action": a} for a in range(4)]) for i in range(workers * 2)]
    for h in handles:
        peer.wait_job(h, deadline)


def measure_latency(peer: Peer, samples: int, interval_s: float, deadline: Deadline) -> list[float]:
    """Submit single actions spaced interval_s apart; return submit->start latencies in ms."""
    sent: list[tuple[float, Any]] = []
    start = time.monotonic()
    for i in range(samples):
        target = start + i * interval_s
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        deadline.remaining()
        t_submit = time.time()
        sent.append((t_submit, peer.submit_stamp({"sample": i})))
    return [(peer.wait_stamp(h, deadline) - t_submit) * 1000.0 for t_submit, h in sent]


def measure_throughput(peer: Peer, jobs: int, actions: int, deadline: Deadline) -> tuple[float, float]:
    """Submit all jobs, then wait for every result. Returns (elapsed_s, submit_s)."""
    all_payloads = [[{"job": j, "action": a} for a in range(actions)] for j in range(jobs)]
    handles: list[Any] = []
    t0 = time.perf_counter()
    for payloads in all_payloads:
        handles.append(peer.submit_job(payloads))
        if len(handles) % 50 == 0:
            deadline.remaining()
    submit_s = time.perf_counter() - t0
    for payloads, handle in zip(all_payloads, handles, strict=True):
        results = peer.wait_job(handle, deadline)
        if results != payloads:
            raise RuntimeError(f"{peer.name}: job returned wrong results: {results!r} != {payloads!r}")
    elapsed = time.perf_counter() - t0
    return elapsed, submit_s


def run(args: argparse.Namespace) -> Result:
    """One full benchmark run of one peer; always tears down what it started."""
    deadline = Deadline(args.timeout)
    peer = make_peer(args.system, args.celery_layout)
    result = Result(system=args.system, jobs=args.jobs, actions_per_job=args.actions, workers=args.workers)
    result.settings = peer.settings(args.workers, args.threads)
    fleet = WorkerFleet(peer.worker_commands(args.workers, args.threads))
    sampler = RssSampler(fleet)
    prepared = False
    try:
        peer.prepare()
        prepared = True
        fleet.start()
        sampler.start()
        wait_ready(peer, fleet, args.workers, deadline)
        steal = HostSteal()
        lat = sorted(measure_latency(peer, args.latency_samples, args.latency_interval_ms / 1000.0, deadline))
        result.host_steal_share["latency"] = steal.share()
        result.latency_samples = len(lat)
        result.latency_ms = {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3)}
        fleet.check_alive()
        servers = server_pids()
        servers0 = {name: cpu_seconds(pids) for name, pids in servers.items()}
        cpu_workers0, cpu_client0 = fleet.cpu_seconds(), time.process_time()
        steal = HostSteal()
        speed = CpuProbe().start()
        try:
            result.elapsed_s, result.submit_s = measure_throughput(peer, args.jobs, args.actions, deadline)
            result.host_steal_share["throughput"] = steal.share()
        finally:  # the probe stops with the phase, whatever ended it
            result.cpu_unit_ms["throughput"] = speed.stop()
        result.worker_cpu_s = fleet.cpu_seconds() - cpu_workers0
        result.client_cpu_s = time.process_time() - cpu_client0
        result.server_cpu_s = {name: cpu_seconds(pids) - servers0[name] for name, pids in servers.items()}
        sampler.sample()
    finally:
        # A second Ctrl-C must not leave workers behind half-way through teardown.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if sampler.is_alive():
                sampler.stop()
            fleet.stop()
            if prepared:
                try:
                    peer.cleanup()
                except Exception as exc:  # report, don't mask the real error
                    print(f"warning: cleanup failed: {exc!r}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    result.worker_peak_rss_mb = sampler.peak_bytes / (1024 * 1024)
    result.worker_largest_rss_mb = sampler.peak_one / (1024 * 1024)
    result.worker_processes = sampler.peak_procs
    return result


def summary(r: Result) -> str:
    """Human-readable report of one run."""
    s = r.settings
    p50 = r.latency_ms.get("p50", float("nan"))
    p99 = r.latency_ms.get("p99", float("nan"))
    lines = [
        f"{r.system}: {r.jobs} jobs x {r.actions_per_job} actions = {r.actions} actions, {r.workers} worker processes",
        f"  settings      {json.dumps(s, sort_keys=True)}",
        f"  elapsed       {r.elapsed_s:.3f} s  (submitting took {r.submit_s:.3f} s)",
        f"  throughput    {r.actions_per_s:,.0f} actions/s",
        f"  CPU (timed)   workers {r.worker_cpu_s:.2f} s, submitter {r.client_cpu_s:.2f} s, servers "
        + ", ".join(f"{name} {v:.2f} s" for name, v in r.server_cpu_s.items()),
        f"  latency       p50 {p50:.2f} ms   p99 {p99:.2f} ms   ({r.latency_samples} light-load samples)",
        f"  peak RSS      {r.worker_peak_rss_mb:.1f} MiB over {r.worker_processes} worker processes (sum), "
        f"largest process {r.worker_largest_rss_mb:.1f} MiB",
        f"  versions      {', '.join(f'{k} {v}' for k, v in versions(r.system).items())}",
        "  host steal    "
        + ", ".join(f"{phase} {'n/a' if v is None else f'{v:.1%}'}" for phase, v in r.host_steal_share.items()),
        "  CPU unit      "
        + ", ".join(f"{phase} {'n/a' if v is None else f'{v:.3f} ms'}" for phase, v in r.cpu_unit_ms.items()),
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers.run_peer",
        description="Benchmark a peer job system (Celery or Dramatiq) for comparison with jobyard.",
    )
    p.add_argument("system", choices=["celery", "dramatiq"])
    p.add_argument("--jobs", type=_positive, default=1000, help="jobs to submit (default 1000)")
    p.add_argument("--actions", type=_positive, default=10, help="no-op actions per job (default 10)")
    p.add_argument("--workers", type=_positive, default=2, help="task-executing worker processes (default 2)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=8,
        help="dramatiq threads per worker process (default 8, dramatiq's own default)",
    )
    p.add_argument(
        "--celery-layout",
        choices=["single", "multi"],
        default="single",
        help="celery: one node with -c W (single, default) or W nodes with -c 1 (multi)",
    )
    p.add_argument("--latency-samples", type=_positive, default=200)
    p.add_argument("--latency-interval-ms", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=300.0, help="bound on the run, seconds (default 300)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (summary to stderr)")
    return p.parse_args(argv)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run, print, and map failures to exit codes."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; workers stopped and queues cleaned up", file=sys.stderr)
        return 130
    except BenchTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(summary(result), file=sys.stderr)
        print(json.dumps(result.to_json()))
    else:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
