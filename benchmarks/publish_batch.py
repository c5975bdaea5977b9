"""What one write per batch of publishes saves: the broker's own publish path, batched and one message at a time.

    python -m benchmarks.publish_batch --messages 3000 --batch 10 --rounds 3

Publishes ``--messages`` persistent messages (a domain event's size) in batches of ``--batch`` through
``RabbitBroker.publish`` (confirms, ``mandatory``) to a fresh quorum queue, once with ``batch_publish`` on (all of a
batch's frames in one write, ``jobyard.broker.amqp_batch``) and once off (aiormq's ``basic_publish`` per message,
as before), alternating for ``--rounds``. Reports, per message, the wall time, this client's CPU and the CPU of
the local RabbitMQ server. The client runs on uvloop, as jobyard's processes do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from benchmarks.common import cpu_seconds, server_pids

BODY = (
    b'{"type":"job.created","event_id":"0196f0b2-8f1e-7c00-8000-000000000000","tenant_id":"default",'
    b'"job_id":"0196f0b2-8f1e-7c00-8000-000000000001","data":{"total":10},"at":"2026-11-30T08:00:00+00:00"}'
)


async def _mode(broker: Any, batched: bool, messages: int, batch: int) -> dict[str, float]:
    broker.batch_publish = batched
    rabbit = server_pids()["rabbitmq"]
    r0, me0, t0 = cpu_seconds(rabbit), time.process_time(), time.perf_counter()
    for _ in range(0, messages, batch):
        await broker.publish([("bench", BODY)] * batch)
    elapsed = time.perf_counter() - t0
    sent = (messages + batch - 1) // batch * batch
    queued = (await broker.queue_depths(["bench"]))["bench"]
    return {
        "sent": sent,
        "queued": queued,  # every confirmed message is in the queue
        "wall_us": round(elapsed / sent * 1e6, 1),
        "client_cpu_us": round((time.process_time() - me0) / sent * 1e6, 1),
        "rabbitmq_cpu_us": round((cpu_seconds(rabbit) - r0) / sent * 1e6, 1),
    }


async def _purge(broker: Any) -> None:
    """Empty the queue between modes, so each starts from the same queue length."""
    channel = broker._publish_channel
    await (await channel.get_underlay_channel()).queue_purge(broker.queue_name("bench"))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from jobyard.broker.rabbitmq import RabbitBroker

    broker = RabbitBroker(args.amqp_url, prefix=f"jobyard-bench-publish-{uuid.uuid4().hex[:8]}")
    await broker.connect()
    if not await broker.wait_connected(10):
        raise SystemExit("RabbitMQ did not accept a connection")
    rounds: list[dict[str, Any]] = []
    try:
        await broker.publish([("bench", BODY)])  # declares the queue
        await _purge(broker)
        for _ in range(args.rounds):
            for batched in (False, True):
                result = await _mode(broker, batched, args.messages, args.batch)
                rounds.append({"mode": "batched" if batched else "one by one", **result})
                await _purge(broker)
    finally:
        channel = broker._publish_channel
        if channel is not None:
            await channel.queue_delete(broker.queue_name("bench"))
        await broker.close()
    return {"messages": args.messages, "batch": args.batch, "rounds": rounds}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.publish_batch", description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=3000, help="messages per mode and round")
    p.add_argument("--batch", type=int, default=10, help="messages per publish call")
    p.add_argument("--rounds", type=int, default=3, help="the modes alternate this many times")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps({"started": started, **uvloop.run(measure(args))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
