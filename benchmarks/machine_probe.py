"""How steady the machine itself is while a latency is measured: a fixed unit of CPU work, timed over and over.

    python -m benchmarks.machine_probe --seconds 5

The unit (about 0.2 ms of pure Python) runs every 10 ms, so the probe takes about 2 % of one core. Its fastest
run is the baseline; a unit that takes more than ``--slow-factor`` times that was slowed by
the machine, not by its own work (it never changes): another process on its core, or, on a virtual machine, the host
taking the CPU back. The development machine's host does that in bursts of tens of milliseconds, even when the
machine is idle, and every process in a burst runs several times slower: a status read that takes 0.4 ms of CPU then
takes a few milliseconds, the reads queue, and the p99 of the phase is the burst's, not the server's. Printed as one
JSON object: units run, how many were slow, the time they took beyond the baseline, the worst one.
"""

from __future__ import annotations

import argparse
import json
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
    start = time.perf_counter()
    _unit()
    return time.perf_counter() - start


def probe(seconds: float, interval: float = 0.01, slow_factor: float = 3.0) -> dict[str, Any]:
    took: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        took.append(_timed_unit())
        time.sleep(interval)
    baseline = min(took, default=0.0)  # the unit never changes: its fastest run is what the machine can do
    slow = [t for t in took if t > slow_factor * baseline]
    return {
        "units": len(took),
        "baseline_ms": round(baseline * 1000, 3),
        "slow_units": len(slow),
        "slow_factor": slow_factor,
        "extra_ms": round(sum(t - baseline for t in slow) * 1000, 1),
        "worst_ms": round(max(took, default=0.0) * 1000, 2),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.machine_probe", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between units")
    p.add_argument("--slow-factor", type=float, default=3.0, help="a unit this many times its baseline is slow")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(json.dumps(probe(args.seconds, args.interval, args.slow_factor)))


if __name__ == "__main__":
    main()
