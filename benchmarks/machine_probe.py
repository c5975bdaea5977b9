"""How steady the machine itself is while a latency is measured: a fixed unit of CPU work, timed over and over.

    python -m benchmarks.machine_probe --seconds 5

The unit (about 0.2 ms of pure Python) runs every 10 ms, so the probe takes about 2 % of one core. It is timed in
the probe's own CPU time, so waiting for a core behind another local process does not count, and its fastest run is
the baseline: a unit that took more than ``--slow-factor`` times that ran on a slower CPU than usual, which on a
virtual machine means the host took the core (or its caches) back without the guest seeing it as steal. The
development machine's host does that in bursts of tens of milliseconds, even when the machine is idle, and every
process in a burst runs several times slower: a status read that takes 0.4 ms of CPU then takes a few milliseconds,
the reads queue behind it, and the phase's p99 is the burst's. Printed as one JSON object: units run, how many were
slow, the time they took beyond the baseline, the worst one, and the median.

    python -m benchmarks.machine_probe --until-eof

runs until its standard input is closed (``benchmarks.common.CpuProbe``: one system's timed phase). Its median says
how fast the CPU ran meanwhile: on the development machine the same unit's median moved by a third from one minute
to the next with no steal counted, and every process's CPU time per unit of work with it.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

UNIT_ITERATIONS = 4000


def _unit() -> int:
    total = 0
    for i in range(UNIT_ITERATIONS):
        total += i * i
    return total


def _timed_unit() -> float:
    """The unit's CPU time: a wait for a core (another local process on it) does not count; a slower core does."""
    start = time.thread_time()
    _unit()
    return time.thread_time() - start


def probe(
    seconds: float, interval: float = 0.01, slow_factor: float = 3.0, until: threading.Event | None = None
) -> dict[str, Any]:
    """Time the unit every ``interval`` seconds for ``seconds``, or until ``until`` is set when given (at least
    once: a phase shorter than the probe's own start still gets a figure)."""
    took: list[float] = []
    started: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        started.append(time.time())
        took.append(_timed_unit())
        if until.is_set() if until is not None else time.perf_counter() >= deadline:
            break
        time.sleep(interval)
    baseline = min(took, default=0.0)  # the unit never changes: its fastest run is what the machine can do
    slow = [(at, t) for at, t in zip(started, took, strict=True) if t > slow_factor * baseline]
    return {
        "units": len(took),
        "baseline_ms": round(baseline * 1000, 3),
        "slow_units": len(slow),
        "slow_factor": slow_factor,
        "extra_ms": round(sum(t - baseline for _, t in slow) * 1000, 1),
        "worst_ms": round(max(took, default=0.0) * 1000, 2),
        "median_ms": round(statistics.median(took) * 1000, 4) if took else None,
        "slow_at": [round(at, 4) for at, _ in slow],
    }


def share_after_slow_cpu(times: Sequence[float], slow_at: Sequence[float], window: float = 0.06) -> float | None:
    """The share of ``times`` (epoch seconds) with a slow unit started within ``window`` seconds before (or 10 ms
    after: a unit runs 0.2 ms every 10 ms, so it may notice a slow moment only that late)."""
    if not times:
        return None
    ordered = sorted(slow_at)
    hits = 0
    for at in times:
        i = bisect.bisect_left(ordered, at - window)
        hits += i < len(ordered) and ordered[i] <= at + 0.01
    return round(hits / len(times), 3)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.machine_probe", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between units")
    p.add_argument("--slow-factor", type=float, default=3.0, help="a unit this many times its baseline is slow")
    p.add_argument("--until-eof", action="store_true", help="run until standard input is closed (not --seconds)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    until = None
    if args.until_eof:
        until = threading.Event()

        def watch() -> None:
            sys.stdin.buffer.read()  # returns at end of file: the caller closed our input
            until.set()

        threading.Thread(target=watch, daemon=True).start()
    print(json.dumps(probe(args.seconds, args.interval, args.slow_factor, until)))


if __name__ == "__main__":
    main()
