"""One broker contract, run on the in-process broker and on RabbitMQ."""

from __future__ import annotations

import asyncio

from jobyard.broker.base import Broker, Delivery


async def collect(broker: Broker, queues: list[str], prefetch: int, count: int, *, ack: bool = True) -> list[Delivery]:
    got: list[Delivery] = []
    done = asyncio.Event()

    async def on_message(delivery: Delivery) -> None:
        got.append(delivery)
        if ack:
            await delivery.ack()
        if len(got) >= count:
            done.set()

    consumer = await broker.consume(queues, prefetch, on_message)
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.cancel()
    return got


async def test_published_messages_are_consumed_in_order(broker: Broker) -> None:
    await broker.publish([("q", f"m{i}".encode()) for i in range(20)])
    got = await collect(broker, ["q"], prefetch=50, count=20)
    assert [d.body for d in got] == [f"m{i}".encode() for i in range(20)]


async def test_a_consumer_gets_at_most_prefetch_unacked_messages(broker: Broker) -> None:
    await broker.publish([("q", b"x")] * 10)
    held: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        held.append(delivery)

    consumer = await broker.consume(["q"], 3, hold)
    await asyncio.sleep(0.5)
    assert len(held) == 3
    await held[0].ack()
    await asyncio.sleep(0.3)
    assert len(held) == 4
    await consumer.cancel()


async def test_unacked_messages_are_redelivered_after_the_consumer_goes(broker: Broker) -> None:
    await broker.publish([("q", b"a"), ("q", b"b")])
    first = await collect(broker, ["q"], prefetch=10, count=2, ack=False)
    assert sorted(d.body for d in first) == [b"a", b"b"]
    second = await collect(broker, ["q"], prefetch=10, count=2)
    assert sorted(d.body for d in second) == [b"a", b"b"]
    assert all(d.redelivered for d in second)


async def test_rejected_with_requeue_comes_back(broker: Broker) -> None:
    await broker.publish([("q", b"again")])
    seen: list[bytes] = []
    done = asyncio.Event()

    async def on_message(delivery: Delivery) -> None:
        seen.append(delivery.body)
        if len(seen) == 1:
            await delivery.reject(requeue=True)
        else:
            await delivery.ack()
            done.set()

    consumer = await broker.consume(["q"], 5, on_message)
    await asyncio.wait_for(done.wait(), 10)
    await consumer.cancel()
    assert seen == [b"again", b"again"]


async def test_one_consumer_reads_several_queues_and_reports_depths(broker: Broker) -> None:
    await broker.publish([("q1", b"one"), ("q2", b"two"), ("q2", b"three")])
    await asyncio.sleep(0.2)
    depths = await broker.queue_depths(["q1", "q2"])
    assert depths == {"q1": 1, "q2": 2}
    got = await collect(broker, ["q1", "q2"], prefetch=10, count=3)
    assert sorted(d.body for d in got) == [b"one", b"three", b"two"]


async def test_dead_letter_accepts_a_body_with_a_reason(broker: Broker) -> None:
    await broker.dead_letter(b"not json", "malformed: body is not JSON")
    await broker.ping()
    assert broker.connected
