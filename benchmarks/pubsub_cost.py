"""What receiving one pub/sub message costs a subscriber: ``RedisKV.subscribe`` over RESP2 against RESP3.

    python -m benchmarks.pubsub_cost --messages 5000 --bytes 5400 --rounds 3

Every API process receives every batch of status events a worker publishes (``jobyard:events:all``) and every cache
invalidation. ``RedisKV`` subscribes over RESP2 (``jobyard.kv.redis``): over RESP3, redis-py 8 passes each message
to a push handler that formats it for a debug log, whether that log is on or not. This subscribes through
``RedisKV.subscribe`` once as shipped and once with a RESP3 client put in for its subscriptions (the code as it was
before), alternating for ``--rounds``. A separate process publishes ``--messages`` messages of ``--bytes`` each
(a batch of ten status events is about 5.4 KB) in pipelines, so the subscriber's own CPU is all this measures:
CPU µs per message from the first message received to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from benchmarks.common import run_measure
from jobyard.kv.redis import RedisKV

CHANNEL = "jobyard:bench:pubsub"
PUBLISHER = """
import sys, redis
url, channel, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = redis.Redis.from_url(url)
pipe = client.pipeline(transaction=False)
for i in range(count):
    pipe.publish(channel, b"x" * size)
    if i % 500 == 499:
        pipe.execute()
        pipe = client.pipeline(transaction=False)
pipe.execute()
"""


async def _receive(kv: RedisKV, args: argparse.Namespace) -> float:
    """CPU µs per message this process spent receiving ``args.messages`` messages through ``kv.subscribe``."""
    got, first_at = 0, 0.0
    subscribed = asyncio.Event()

    class _Watch:  # the subscription's confirmation says when the publisher may start
        def subscribed(self) -> None:
            subscribed.set()

        def heard(self, since: float) -> None:
            pass

    async def consume() -> None:
        nonlocal got, first_at
        async for _channel, _raw in kv.subscribe(CHANNEL, watch=_Watch()):  # type: ignore[arg-type]
            if got == 0:
                first_at = time.process_time()
            got += 1
            if got == args.messages:
                return

    task = asyncio.create_task(consume())
    await asyncio.wait_for(subscribed.wait(), 10)
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, args.redis, CHANNEL, str(args.messages), str(args.bytes)
    )
    try:
        await asyncio.wait_for(task, 120)
    finally:
        await asyncio.wait_for(publisher.wait(), 60)
    return (time.process_time() - first_at) / (args.messages - 1) * 1e6


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        row: dict[str, float] = {}
        for mode in ("resp2", "resp3"):
            kv = RedisKV(args.redis)
            if mode == "resp3":  # what subscriptions spoke before: the client's default protocol (RESP3 in redis-py 8)
                await kv._subscriber.aclose(close_connection_pool=True)
                kv._subscriber = aioredis.Redis.from_url(args.redis, protocol=3)
            try:
                row[f"{mode}_cpu_us_per_message"] = round(await _receive(kv, args), 1)
            finally:
                await kv.close()
        rounds.append(row)
    return {"messages": args.messages, "bytes": args.bytes, "rounds": rounds}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pubsub_cost", description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--bytes", type=int, default=5400, help="size of one message (ten status events: about 5.4 KB)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result, printed = run_measure(args, measure)
    if not printed:
        print(f"receiving a {args.bytes}-byte message through RedisKV.subscribe, CPU µs (RESP2 as shipped · RESP3):")
        for row in result["rounds"]:
            print(f"  {row['resp2_cpu_us_per_message']:7.1f} · {row['resp3_cpu_us_per_message']:7.1f}")


if __name__ == "__main__":
    main()
