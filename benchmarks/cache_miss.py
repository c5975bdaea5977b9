"""What a status read that misses the cache costs the cache itself, on a real Redis: latency and round trips.

    python -m benchmarks.cache_miss --reads 3000

Every status change of a job invalidates its cached reads, so the first read after each change is a miss: the
cache looks the value up, takes the fill lock, recomputes, and stores the value (``jobyard.kv.cache``). This times
``--reads`` such misses one after another (each read follows an invalidation of its job, as after a worker's
commit), and as many hits, with a recompute that costs nothing (the store's query is left out, so what remains is
the cache's own round trips and CPU). Reports p50/p90/p99 in µs for each, and the round trips to Redis a miss and a
hit take (calls to the KV; a script is one). Local copies are off: every read asks Redis, as a read in another API
process would.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import percentile, run_measure
from jobyard.kv.cache import Cache
from jobyard.kv.redis import RedisKV


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {f"p{q}": round(percentile(ordered, q), 1) for q in (50, 90, 99)}


class _Counting:
    """The KV, counting the calls made through it (each one round trip to Redis)."""

    def __init__(self, kv: RedisKV) -> None:
        self._kv = kv
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._kv, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await attr(*args, **kwargs)

        return counted


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    kv = RedisKV(args.redis)
    counting = _Counting(kv)
    namespace = f"bench-miss-{time.monotonic_ns()}"
    cache = Cache(counting, namespace, local_ttl=0)  # type: ignore[arg-type]
    value = b"x" * args.value_bytes

    async def compute() -> bytes:
        return value

    misses: list[float] = []
    hits: list[float] = []
    miss_calls = hit_calls = 0
    clock = time.perf_counter
    try:
        await cache.get_or_set("job", "status", compute, 30)  # scripts loaded, connections open
        await cache.settle()
        for _ in range(args.reads):
            await cache.invalidate(["job"])  # a worker's commit changed the job
            before = counting.calls
            started = clock()
            await cache.get_or_set("job", "status", compute, 30)
            misses.append((clock() - started) * 1e6)
            await cache.settle()  # stored (in the background): the next read is a hit
            after_miss = counting.calls
            started = clock()
            await cache.get_or_set("job", "status", compute, 30)
            hits.append((clock() - started) * 1e6)
            miss_calls += after_miss - before
            hit_calls += counting.calls - after_miss
    finally:
        await kv.close()
    return {
        "reads": args.reads,
        "value_bytes": args.value_bytes,
        "miss_us": _percentiles(misses),
        "hit_us": _percentiles(hits),
        "round_trips_per_miss": round(miss_calls / args.reads, 2),
        "round_trips_per_hit": round(hit_calls / args.reads, 2),
        "stats": vars(cache.stats),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cache_miss", description=__doc__.splitlines()[0])
    p.add_argument("--reads", type=int, default=3000)
    p.add_argument("--value-bytes", type=int, default=2000, help="size of the cached value (a ten-action status)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    result, as_json = run_measure(parse_args(argv), measure)
    if as_json:
        return
    for kind in ("miss", "hit"):
        lat = result[f"{kind}_us"]
        print(
            f"{kind}: p50 {lat['p50']:.0f} µs, p90 {lat['p90']:.0f}, p99 {lat['p99']:.0f}; "
            f"{result[f'round_trips_per_{kind}']:.2f} round trips to Redis"
        )


if __name__ == "__main__":
    main()
