"""Batched publishing on RabbitMQ: one write per batch, and the same confirms, returns and nacks as one by one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest

from jobyard.broker import amqp_batch
from jobyard.broker.rabbitmq import RabbitBroker
from jobyard.errors import BrokerError
from tests import services
from tests.conftest import delete_rabbit_queues


@pytest.fixture
async def channel() -> AsyncIterator[tuple[aiormq.Channel, str]]:
    """An aiormq channel with confirms and raising returns (as the broker opens it), and a fresh quorum queue."""
    services.require("rabbitmq")
    connection = await aio_pika.connect(services.AMQP_URL)
    wrapper = await connection.channel(publisher_confirms=True, on_return_raises=True)
    queue = f"jobyard-test-batch-{uuid.uuid4().hex[:8]}"
    await wrapper.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    underlay = await wrapper.get_underlay_channel()
    assert amqp_batch.supports(underlay)
    try:
        yield underlay, queue
    finally:
        side = await connection.channel()
        await side.queue_delete(queue)
        await connection.close()


async def drain(queue: str, count: int) -> list[bytes]:
    connection = await aio_pika.connect(services.AMQP_URL)
    try:
        ch = await connection.channel()
        q = await ch.declare_queue(queue, passive=True)
        got: list[bytes] = []
        async with q.iterator() as it:
            async for message in it:
                got.append(message.body)
                await message.ack()
                if len(got) == count:
                    break
        return got
    finally:
        await connection.close()


def count_writes(underlay: aiormq.Channel) -> list[int]:
    writes = [0]
    put = underlay.write_queue.put

    async def counting(item: Any) -> None:
        writes[0] += 1
        await put(item)

    underlay.write_queue.put = counting  # type: ignore[method-assign]
    return writes


async def test_a_batch_is_one_write_and_arrives_whole_and_in_order(channel: tuple[aiormq.Channel, str]) -> None:
    underlay, queue = channel
    big = b"x" * (underlay.max_content_size * 2 + 17)  # split over three body frames
    bodies = [f"m{i}".encode() for i in range(200)] + [big, b""]
    writes = count_writes(underlay)
    confirmations = await amqp_batch.publish_batch(underlay, "", [(queue, b) for b in bodies], mandatory=True)
    assert writes[0] == 1
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations) and len(confirmations) == len(bodies)
    assert underlay.message_id_delivery_tag == {}
    # aiormq's own publishes on the same channel still line up with the broker's delivery tags.
    single = await underlay.basic_publish(b"after", routing_key=queue, mandatory=True)
    assert isinstance(single, aiormq.spec.Basic.Ack)
    assert await drain(queue, len(bodies) + 1) == [*bodies, b"after"]


async def test_concurrent_batches_and_single_publishes_are_all_confirmed(channel: tuple[aiormq.Channel, str]) -> None:
    underlay, queue = channel
    batches = [[(queue, f"b{n}-{i}".encode()) for i in range(25)] for n in range(8)]
    singles = [underlay.basic_publish(f"s{n}".encode(), routing_key=queue, mandatory=True) for n in range(20)]
    results = await asyncio.gather(
        *(amqp_batch.publish_batch(underlay, "", b, mandatory=True) for b in batches), *singles
    )
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for r in results[:8] for c in r)
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in results[8:])
    got = await drain(queue, 8 * 25 + 20)
    for batch in batches:  # each batch's messages stay together, in order
        start = got.index(batch[0][1])
        assert got[start : start + 25] == [body for _, body in batch]


async def test_an_unroutable_message_fails_the_batch_but_the_others_are_delivered(
    channel: tuple[aiormq.Channel, str],
) -> None:
    underlay, queue = channel
    items = [(queue, b"one"), (f"{queue}-nowhere", b"lost"), (queue, b"two")]
    with pytest.raises(aiormq.exceptions.PublishError):
        await amqp_batch.publish_batch(underlay, "", items, mandatory=True)
    assert underlay.message_id_delivery_tag == {}
    # Not mandatory: an unroutable message is simply confirmed (domain events nobody has bound a queue for).
    confirmations = await amqp_batch.publish_batch(underlay, "", [(f"{queue}-nowhere", b"x")], mandatory=False)
    assert isinstance(confirmations[0], aiormq.spec.Basic.Ack)
    assert await drain(queue, 2) == [b"one", b"two"]


async def test_a_nacked_message_fails_the_batch(channel: tuple[aiormq.Channel, str]) -> None:
    underlay, queue = channel
    connection = await aio_pika.connect(services.AMQP_URL)
    full = f"jobyard-test-full-{uuid.uuid4().hex[:8]}"
    try:
        side = await connection.channel()
        await side.declare_queue(
            full,
            durable=True,
            # A classic queue applies the limit exactly at each publish (a quorum queue's check may lag a little).
            arguments={"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "reject-publish"},
        )
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await amqp_batch.publish_batch(underlay, "", [(full, b"1"), (full, b"2"), (full, b"3")], mandatory=True)
        assert underlay.message_id_delivery_tag == {}
        # The channel is still usable and in step.
        confirmations = await amqp_batch.publish_batch(underlay, "", [(queue, b"ok")] * 3, mandatory=True)
        assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations)
    finally:
        side = await connection.channel()
        await side.queue_delete(full)
        await connection.close()


async def test_a_routing_key_too_long_is_refused_before_anything_is_sent(channel: tuple[aiormq.Channel, str]) -> None:
    underlay, queue = channel
    tag = underlay.delivery_tag
    with pytest.raises(ValueError, match="routing key too long"):
        await amqp_batch.publish_batch(underlay, "", [(queue, b"a"), ("q" * 256, b"b")], mandatory=True)
    assert underlay.delivery_tag == tag and underlay.message_id_delivery_tag == {}
    assert await amqp_batch.publish_batch(underlay, "", [(queue, b"ok")], mandatory=True)


async def test_a_cancelled_batch_leaves_the_channel_usable(channel: tuple[aiormq.Channel, str]) -> None:
    underlay, queue = channel
    task = asyncio.create_task(amqp_batch.publish_batch(underlay, "", [(queue, b"c")] * 50, mandatory=True))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert underlay.message_id_delivery_tag == {}
    confirmations = await amqp_batch.publish_batch(underlay, "", [(queue, b"d")] * 5, mandatory=True)
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-by-one"])
async def test_the_broker_reports_unroutable_messages_either_way(batched: bool) -> None:
    services.require("rabbitmq")
    prefix = f"jobyard-test-{uuid.uuid4().hex[:8]}"
    broker = RabbitBroker(services.AMQP_URL, prefix=prefix, queue_type="quorum")
    broker.batch_publish = batched
    await broker.connect()
    try:
        assert await broker.wait_connected(10)
        channel = broker._publish_channel
        assert channel is not None
        await broker.publish([("q", b"first")])  # declares the queue (an RPC of its own)
        writes = count_writes(await channel.get_underlay_channel())
        await broker.publish([("q", f"m{i}".encode()) for i in range(30)])
        assert writes[0] == (1 if batched else 30)
        await broker.publish_events([("job.created", b"{}")] * 5)  # nobody bound: confirmed all the same
        # The queue goes away behind the broker's back: the next publish is returned, and says so.
        side_connection = await aio_pika.connect(services.AMQP_URL)
        side = await side_connection.channel()
        await side.queue_delete(broker.queue_name("q"))
        await side_connection.close()
        with pytest.raises(BrokerError, match="could not route"):
            await broker.publish([("q", b"lost")])
    finally:
        await broker.close()
        await delete_rabbit_queues(prefix)
