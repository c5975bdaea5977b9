"""What an announced write costs an API process that holds many local copies of cached reads.

    python -m benchmarks.cache_drops --held 0,1000,10000 --announcements 2000 --groups 20

Every committed status change is announced to every API process (the cache's invalidation channel: one message per
worker batch, naming the batch's jobs), and each process drops its local copies of those jobs' reads. A process keeps
up to 10,000 copies (each lives ``local_ttl``, 1 s, but stays held until dropped or crowded out), so one that has
served the status of 10,000 different jobs holds that many from then on. This fills a ``Cache`` (on the in-memory KV:
no servers) with ``--held`` copies, then times ``--announcements`` drops of ``--groups`` jobs each, none of them
held (the common case: most jobs written are not being read); CPU µs per announcement, best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import run_measure
from jobyard.kv.cache import Cache
from jobyard.kv.memory import MemoryKV


async def _fill(cache: Cache, held: int) -> None:
    async def value() -> bytes:
        return b'{"status":"succeeded"}'

    for i in range(held):
        await cache.get_or_set(f"held-{i}", f"job:default:held-{i}", value, 3600)


def _announce(cache: Cache, announcements: int, groups: int) -> float:
    """CPU seconds for ``announcements`` drops of ``groups`` jobs that are not held."""
    names = [[f"written-{a}-{g}" for g in range(groups)] for a in range(announcements)]
    start = time.process_time()
    for batch in names:
        cache.drop_local(batch)
    return time.process_time() - start


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for held in args.held:
        cache = Cache(MemoryKV(), "api", local_ttl=3600)
        await _fill(cache, held)
        best = min(_announce(cache, args.announcements, args.groups) for _ in range(args.rounds))
        rows.append({"held": held, "cpu_us_per_announcement": round(best / args.announcements * 1e6, 1)})
    return {"groups_per_announcement": args.groups, "rows": rows}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cache_drops", description=__doc__.splitlines()[0])
    p.add_argument("--held", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1000, 10000])
    p.add_argument("--announcements", type=int, default=2000)
    p.add_argument("--groups", type=int, default=20, help="jobs named per announcement (a worker batch's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    result, as_json = run_measure(parse_args(argv), measure)
    if as_json:
        return
    for row in result["rows"]:
        print(f"{row['held']:>7,} copies held: {row['cpu_us_per_announcement']:9.1f} µs CPU per announcement")


if __name__ == "__main__":
    main()
