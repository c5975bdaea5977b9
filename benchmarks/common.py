"""Helpers shared by the jobyard side and the driver: percentiles, deadlines, process sampling.

Kept free of jobyard imports so the peer runner (in its own virtualenv) can use it as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTED = time.strftime("%Y-%m-%d %H:%M:%S %z")  # when a benchmark's process imported this module: its start


class BenchTimeout(Exception):
    """The run went past its --timeout."""


class Deadline:
    """A point in time that every wait of the run is bounded by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; raises BenchTimeout once none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise BenchTimeout(f"benchmark exceeded --timeout {self.seconds:g}s")
        return left


def add_setting_option(parser: argparse.ArgumentParser) -> None:
    """``--setting NAME=VALUE`` (repeatable): a jobyard setting for the jobyard processes of the run."""
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="jobyard: a setting for its processes (repeatable), e.g. rabbitmq_queue_type=classic",
    )


def settings_env(pairs: Sequence[str]) -> dict[str, str]:
    """``--setting rabbitmq_queue_type=classic`` → ``{"JOBYARD_RABBITMQ_QUEUE_TYPE": "classic"}`` (README names)."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--setting wants NAME=VALUE, got {pair!r}")
        name = name.strip().upper()
        env[name if name.startswith("JOBYARD_") else f"JOBYARD_{name}"] = value
    return env


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def p50_p99(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(percentile(ordered, 50), 3), "p99": round(percentile(ordered, 99), 3)}


class RssPeaks(threading.Thread):
    """Samples the RSS of named groups of processes; keeps each group's peak sum and peak single process."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]], interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._groups = groups
        self.interval = interval
        self.peak_sum: dict[str, int] = {}
        self.peak_one: dict[str, int] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._stop_event = threading.Event()

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def sample(self) -> None:
        for name, pids in self._groups().items():
            total = 0
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    rss = int(self._proc(pid).memory_info().rss)
                    total += rss
                    self.peak_one[name] = max(self.peak_one.get(name, 0), rss)
            self.peak_sum[name] = max(self.peak_sum.get(name, 0), total)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time used so far by the given processes."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


class HostSteal:
    """The share of the machine's CPU time that its hypervisor gave to someone else since this was made.

    Linux counts it as ``steal`` in ``/proc/stat``: time a virtual CPU had work but the host ran another guest. A
    phase with a few percent of it runs slower, and with long stretches of it a latency's tail is the host's, not
    the system's. ``share()`` is None where the system does not count steal.
    """

    def __init__(self) -> None:
        self._start = _steal_and_total()

    def share(self) -> float | None:
        now = _steal_and_total()
        if now is None or self._start is None:
            return None
        total = now[1] - self._start[1]
        return round((now[0] - self._start[0]) / total, 4) if total > 0 else 0.0


class CpuProbe:
    """How fast the CPU ran during a phase: ``benchmarks.machine_probe``'s fixed unit of pure Python, timed in its
    own CPU time every 10 ms (about 2 % of one core) by a process of its own, from ``start()`` to ``stop()``.

    A virtual machine's CPU can run slower without any steal counted (the host's other work on the same core or its
    caches, its clock): each unit of work then costs every process more CPU time. ``stop()`` returns the unit's
    median in ms (None if the probe failed), the same for every system, so two systems' phases can be compared.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CpuProbe:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.machine_probe", "--until-eof"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> float | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            out, _ = proc.communicate(input=b"", timeout=10)  # closes its input: it reports and exits
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
        if proc.returncode != 0 or not out.strip():
            return None
        median = json.loads(out.strip().splitlines()[-1]).get("median_ms")
        return None if median is None else float(median)


def _steal_and_total() -> tuple[float, float] | None:
    """All CPUs' steal and total time so far (guest time is already inside user time, so it is left out)."""
    times = psutil.cpu_times()
    steal = getattr(times, "steal", None)
    if steal is None:
        return None
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return float(steal), float(sum(times) - guest)


def server_pids() -> dict[str, list[int]]:
    """PIDs of the local servers, to show where CPU went (shared servers: includes anyone else's load)."""
    names = {"postgres": "postgresql", "beam.smp": "rabbitmq", "redis-server": "redis"}
    out: dict[str, list[int]] = {v: [] for v in names.values()}
    for proc in psutil.process_iter(["name"]):
        server = names.get(proc.info["name"] or "")
        if server:
            out[server].append(proc.pid)
    return out


@contextlib.asynccontextmanager
async def scratch_database(pg_url: str, db_prefix: str) -> AsyncIterator[str]:
    """A fresh, empty database for one measurement: its URL; dropped after, whoever is still connected.

    ``pg_url`` is an admin connection. Imports asyncpg only when called (the peers' virtualenv imports this module
    too).
    """
    import asyncpg

    name = f"{db_prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlparse(pg_url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_repository(pg_url: str, db_prefix: str, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """A fresh, migrated database for one measurement: jobyard's repository on it and its URL; dropped after.

    ``pg_url`` is an admin connection; ``settings`` go to jobyard's ``Settings``. Imports jobyard only when called.
    """
    from jobyard.config import Settings
    from jobyard.store import create_repository

    async with scratch_database(pg_url, db_prefix) as url:
        repo = create_repository(Settings(database_url=url, **settings))
        try:
            await repo.migrate()
            yield repo, url
        finally:
            await repo.close()


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """``--pg-url`` (an admin connection, to create the scratch database) and ``--db-prefix`` (its name's)."""
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="an admin connection")
    p.add_argument("--db-prefix", default="jobyard_bench")


def run_measure(
    args: argparse.Namespace, measure: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], bool]:
    """Run a benchmark's ``measure``; with ``--json``, print its result as one JSON line. The result, and whether
    it was printed (otherwise the benchmark prints its own summary)."""
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
    return result, bool(args.json)


def print_result(result: dict[str, Any]) -> int:
    """Print a benchmark's result as JSON, stamped with the local time it started; the exit status."""
    print(json.dumps({"started": STARTED, **result}, indent=1))
    return 0
