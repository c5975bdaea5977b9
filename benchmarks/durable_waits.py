"""What durability costs a single step on this machine: a PostgreSQL commit and a RabbitMQ hop, with and without it.

    python -m benchmarks.durable_waits --samples 1000 --interval-ms 5 --rounds 2

jobyard's way from submit to start has three steps that wait for a disk: the insert's commit, the publish to a
quorum queue (RabbitMQ writes the message to its log and syncs it before it confirms and delivers) and the claim's
commit. Dramatiq's has one publish to a classic queue, without publisher confirms. This measures each step alone,
one at a time at a light pace (``--interval-ms`` apart, as ``benchmarks.run`` measures submit→start):

- ``commit``: one-row ``UPDATE`` and ``COMMIT`` in a scratch database, with ``synchronous_commit`` on (PostgreSQL's
  default; jobyard's every commit) and off (the commit returns before its WAL is flushed);
- ``hop``: publish → the consumer's delivery, in this process over two connections, to a quorum queue with
  publisher confirms and a persistent message (jobyard's) and to a durable classic queue without confirms
  (Dramatiq's default).

Modes alternate within each round; p50 / p99 in ms per mode over every round. The client runs on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benchmarks.common import add_store_arguments, p50_p99, print_result, scratch_database

COMMIT_MODES = ("synchronous_commit on", "synchronous_commit off")
HOP_MODES = ("quorum queue, confirmed", "classic queue, no confirms")


async def _paced(samples: int, interval_ms: float, step: Callable[[], Awaitable[float]]) -> list[float]:
    """``step`` ``samples`` times, each starting ``interval_ms`` after the previous one started; its ms."""
    out: list[float] = []
    start = time.monotonic()
    for i in range(samples):
        pause = start + i * interval_ms / 1000.0 - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        out.append(await step())
    return out


async def _commits(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    import asyncpg

    async with scratch_database(args.pg_url, args.db_prefix) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE step (id int PRIMARY KEY, n bigint NOT NULL)")
            await conn.execute("INSERT INTO step VALUES (1, 0)")
            update = await conn.prepare("UPDATE step SET n = n + 1 WHERE id = 1")

            async def commit() -> float:
                t0 = time.perf_counter()
                async with conn.transaction():
                    await update.fetch()
                return (time.perf_counter() - t0) * 1000

            for _ in range(args.rounds):
                for mode in COMMIT_MODES:
                    await conn.execute(f"SET synchronous_commit = {mode.split()[-1]}")
                    times[mode] += await _paced(args.samples, args.interval_ms, commit)
        finally:
            await conn.close()


async def _hops(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    import aio_pika

    prefix = f"jobyard-bench-hop-{uuid.uuid4().hex[:8]}"
    publisher = await aio_pika.connect(args.amqp_url)
    consumer = await aio_pika.connect(args.amqp_url)
    consumers: list[tuple[Any, str]] = []
    try:
        confirmed = await publisher.channel(publisher_confirms=True)
        unconfirmed = await publisher.channel(publisher_confirms=False)
        receiving = await consumer.channel()
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_message(message: Any) -> None:
            arrived.put_nowait(time.perf_counter())
            await message.ack()

        queues = {}
        for mode, kind in zip(HOP_MODES, ("quorum", "classic"), strict=True):
            queue = await receiving.declare_queue(f"{prefix}-{kind}", durable=True, arguments={"x-queue-type": kind})
            consumers.append((queue, await queue.consume(on_message)))
            queues[mode] = queue.name
        channels = {HOP_MODES[0]: confirmed, HOP_MODES[1]: unconfirmed}

        def hop(mode: str) -> Callable[[], Awaitable[float]]:
            body = aio_pika.Message(b"x" * 200, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

            async def one() -> float:
                t0 = time.perf_counter()
                await channels[mode].default_exchange.publish(body, routing_key=queues[mode])
                return (await asyncio.wait_for(arrived.get(), 10) - t0) * 1000

            return one

        for _ in range(args.rounds):
            for mode in HOP_MODES:
                times[mode] += await _paced(args.samples, args.interval_ms, hop(mode))
    finally:
        for queue, tag in consumers:  # this run's queues go with it, whatever happened
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
                await queue.delete(if_unused=False, if_empty=False)
        await publisher.close()
        await consumer.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    times: dict[str, list[float]] = {mode: [] for mode in (*COMMIT_MODES, *HOP_MODES)}
    await _commits(args, times)
    await _hops(args, times)
    return {
        "samples": args.samples,
        "interval_ms": args.interval_ms,
        "rounds": args.rounds,
        "commit_ms": {mode: p50_p99(times[mode]) for mode in COMMIT_MODES},
        "hop_ms": {mode: p50_p99(times[mode]) for mode in HOP_MODES},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.durable_waits", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000, help="steps per mode and round")
    p.add_argument("--interval-ms", type=float, default=5.0, help="from one step's start to the next one's")
    p.add_argument("--rounds", type=int, default=2, help="times every mode runs, alternating")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    add_store_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    return print_result(uvloop.run(measure(args)))


if __name__ == "__main__":
    sys.exit(main())
