"""RabbitMQ broker over aio-pika: durable (quorum) queues, publisher confirms with ``mandatory``, manual acks.

The connection is supervised here: if RabbitMQ goes away, ``connected`` turns false (workers fall back to
polling the store, the relay keeps rows in the outbox) and a background task reconnects with backoff, then
re-subscribes every consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from jobyard.broker import amqp_batch
from jobyard.broker.base import OnMessage
from jobyard.errors import BrokerError, BrokerUnavailable, ConfigurationError
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.broker.rabbitmq")

# aiormq can queue a publish without waiting for the socket write (``wait=False``) in recent versions.
_NO_DRAIN_WAIT: dict[str, Any] = (
    {"wait": False} if "wait" in inspect.signature(aiormq.Channel.basic_publish).parameters else {}
)

_CONNECTION_ERRORS = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    TimeoutError,
)


class _AckWindow:
    """Acknowledges one channel's deliveries with as few frames as possible.

    Settling a delivery only records it; once per event-loop turn the window sends ONE ``basic.ack`` with
    ``multiple=True`` for every settled delivery below the oldest unsettled one, and individual acks for the
    settled ones above it (so a long-running action never holds finished ones against the prefetch limit).
    Profiles showed one socket write per acked message as the largest single cost of a busy worker.
    """

    __slots__ = ("_flush_scheduled", "_flushing", "_settled", "_unsettled")

    def __init__(self) -> None:
        self._unsettled: set[int] = set()
        self._settled: dict[int, AbstractIncomingMessage] = {}
        self._flush_scheduled = False
        # Flushes go out one after another: a multiple-ack must never overtake an earlier single ack of a tag it
        # covers (acking a tag twice is a channel error).
        self._flushing = asyncio.Lock()

    def track(self, message: AbstractIncomingMessage) -> None:
        if message.delivery_tag is not None:
            self._unsettled.add(message.delivery_tag)

    def forget(self, message: AbstractIncomingMessage) -> None:
        """The delivery was settled some other way (rejected): it no longer holds the window back."""
        if message.delivery_tag is not None:
            self._unsettled.discard(message.delivery_tag)

    def settle(self, message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag
        if tag is None or tag not in self._unsettled:
            return
        self._unsettled.discard(tag)
        self._settled[tag] = message
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._schedule_flush)

    def _schedule_flush(self) -> None:
        self._flush_scheduled = False
        if self._settled:
            settled, self._settled = self._settled, {}
            asyncio.get_running_loop().create_task(self._flush(settled))

    async def _flush(self, settled: dict[int, AbstractIncomingMessage]) -> None:
        async with self._flushing:
            await self._send(settled)

    async def _send(self, settled: dict[int, AbstractIncomingMessage]) -> None:
        # Deliveries settled after this batch was taken are not acked yet either: they bound the multiple-ack too.
        floor = min(itertools.chain(self._unsettled, self._settled), default=None)
        below = [tag for tag in settled if floor is None or tag < floor]
        try:
            if below:
                await settled[max(below)].ack(multiple=True)
            for tag, message in settled.items():
                if floor is not None and tag > floor:
                    await message.ack()
        except (*_CONNECTION_ERRORS, aio_pika.exceptions.MessageProcessError) as exc:
            # The channel is gone: RabbitMQ will redeliver, and the claim turns the copies into no-ops.
            log.debug("acks lost with their channel (%s); the messages will be redelivered", exc)


class RabbitDelivery:
    __slots__ = ("_message", "_window", "body", "redelivered")

    def __init__(self, message: AbstractIncomingMessage, window: _AckWindow | None = None) -> None:
        self._message = message
        self._window = window
        self.body = message.body
        self.redelivered = bool(message.redelivered)
        if window is not None:
            window.track(message)

    async def ack(self) -> None:
        if self._window is not None:
            self._window.settle(self._message)
            return
        try:
            await self._message.ack()
        except (*_CONNECTION_ERRORS, aio_pika.exceptions.MessageProcessError) as exc:
            # The channel is gone: RabbitMQ will redeliver, and the claim turns the copy into a no-op.
            log.debug("ack lost with its channel (%s); the message will be redelivered", exc)

    async def reject(self, requeue: bool) -> None:
        try:
            await self._message.reject(requeue=requeue)
        except (*_CONNECTION_ERRORS, aio_pika.exceptions.MessageProcessError) as exc:
            log.debug("reject lost with its channel (%s)", exc)
        finally:
            if self._window is not None:
                self._window.forget(self._message)


class RabbitConsumer:
    def __init__(self, broker: RabbitBroker, queues: Sequence[str], prefetch: int, on_message: OnMessage) -> None:
        self._broker = broker
        self.queues = list(queues)
        self.prefetch = prefetch
        self._on_message = on_message
        self._channel: AbstractChannel | None = None
        self._window = _AckWindow()
        self._cancelled = False

    async def _start(self, connection: AbstractConnection) -> None:
        self._window = _AckWindow()  # delivery tags are per channel
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        for name in self.queues:
            queue = await self._broker._declare(channel, name)
            await queue.consume(self._deliver, no_ack=False)
        self._channel = channel

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        delivery = RabbitDelivery(message, self._window)
        try:
            await self._on_message(delivery)
        except Exception:
            log.exception("message handler failed; the message is requeued")
            await delivery.reject(requeue=True)

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._broker._consumers.discard(self)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._channel.close()  # unacked deliveries return to their queues


class RabbitBroker:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "jobyard",
        queue_type: str = "quorum",
        events_exchange: str = "jobyard.events",
        publish_timeout: float = 15.0,
        reconnect_max_delay: float = 10.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._queue_type = queue_type
        self.events_exchange = events_exchange
        self._exchange_declared = False
        self._publish_timeout = publish_timeout
        #: One socket write per batch of publishes (``amqp_batch``); False sends each with aiormq's basic_publish.
        self.batch_publish = True
        self._reconnect_max_delay = reconnect_max_delay
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._consumers: set[RabbitConsumer] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()

    def queue_name(self, queue: str) -> str:
        return f"{self._prefix}.{queue}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self._prefix}.dead-letters"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # --- connection supervision ---------------------------------------------------------------------
    async def connect(self) -> None:
        self._closing = False
        try:
            await self._open()
        except _CONNECTION_ERRORS as exc:
            log.warning("RabbitMQ is unreachable (%s); reconnecting in the background", exc)
            self._schedule_reconnect()

    async def _open(self) -> None:
        connection = await aio_pika.connect(self._url, timeout=5)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._declared.clear()
            self._exchange_declared = False
            for consumer in list(self._consumers):
                await consumer._start(connection)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self._connection = connection
        self._publish_channel = channel
        connection.close_callbacks.add(self._on_connection_closed)
        self._connected.set()
        log.info("connected to RabbitMQ")

    def _on_connection_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        self._connected.clear()
        self._publish_channel = None
        if not self._closing:
            log.warning("lost the RabbitMQ connection (%s); reconnecting", exc)
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.2
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self._open()
                return
            except _CONNECTION_ERRORS as exc:
                log.debug("RabbitMQ still unreachable: %s", exc)
                delay = min(self._reconnect_max_delay, delay * 2)

    async def close(self) -> None:
        self._closing = True
        await stop_tasks([self._reconnect_task])
        for consumer in list(self._consumers):
            await consumer.cancel()
        if self._connection is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._connection.close()
        self._connection = None
        self._connected.clear()

    # --- topology -----------------------------------------------------------------------------------
    async def _declare(self, channel: AbstractChannel, queue: str) -> AbstractQueue:
        arguments: dict[str, Any] = {"x-queue-type": self._queue_type}
        try:
            return await channel.declare_queue(self.queue_name(queue), durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {self.queue_name(queue)!r} exists with other arguments ({exc}); "
                f"set JOBYARD_RABBITMQ_QUEUE_TYPE to match it, or delete the queue"
            ) from exc

    async def _ensure_declared(self, channel: AbstractChannel, queues: set[str]) -> None:
        for queue in queues - self._declared:
            await self._declare(channel, queue)
            self._declared.add(queue)

    # --- publishing ---------------------------------------------------------------------------------
    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("RabbitMQ is not connected; messages stay in the outbox")
        try:
            await self._ensure_declared(channel, {queue for queue, _ in messages})
            # Straight to aiormq: aio-pika's Message/Exchange layer cost a third of the relay's CPU per message,
            # and ``wait=False`` queues every frame at once instead of one writer round per message; the
            # confirms are still awaited below. Properties are per message: aiormq stamps each with an id.
            routed = [(self.queue_name(queue), body) for queue, body in messages]
            # A basic.return (unroutable with mandatory) comes back as the returned message.
            await self._publish_confirmed(channel, "", routed, mandatory=True, refused="could not route a message")
        except aiormq.exceptions.PublishError as exc:
            raise BrokerError(f"RabbitMQ could not route a message: {exc}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerError(f"RabbitMQ refused a message (nack): {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ connection failed while publishing: {exc!r}") from exc

    async def _publish_confirmed(
        self,
        channel: AbstractChannel,
        exchange: str,
        items: Sequence[tuple[str, bytes]],
        *,
        mandatory: bool,
        refused: str,
    ) -> None:
        """Persistent ``(routing key, body)`` messages to ``exchange``: one write for all, every confirm awaited."""
        underlay = await channel.get_underlay_channel()
        confirmations: Sequence[Any]
        if self.batch_publish and amqp_batch.supports(underlay):
            async with asyncio.timeout(self._publish_timeout):
                confirmations = await amqp_batch.publish_batch(underlay, exchange, items, mandatory=mandatory)
        else:
            confirmations = await asyncio.gather(
                *(
                    underlay.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json"),
                        mandatory=mandatory,
                        timeout=self._publish_timeout,
                        **_NO_DRAIN_WAIT,
                    )
                    for routing_key, body in items
                )
            )
        for confirmation in confirmations:
            if not isinstance(confirmation, aiormq.spec.Basic.Ack):
                raise BrokerError(f"RabbitMQ {refused}: {confirmation!r}")

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish domain events to the durable topic exchange (persistent messages, publisher confirms).

        Not ``mandatory``: an event nobody has bound a queue for is not an error.
        """
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("RabbitMQ is not connected; events stay in the store")
        try:
            if not self._exchange_declared:
                await channel.declare_exchange(self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
                self._exchange_declared = True
            await self._publish_confirmed(
                channel, self.events_exchange, events, mandatory=False, refused="did not confirm an event"
            )
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerError(f"RabbitMQ refused an event (nack): {exc}") from exc
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ exchange {self.events_exchange!r} exists with another type ({exc}); "
                "set JOBYARD_EVENTS_EXCHANGE to another name, or delete the exchange"
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ connection failed while publishing events: {exc!r}") from exc

    async def dead_letter(self, body: bytes, reason: str) -> None:
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("RabbitMQ is not connected")
        try:
            await channel.declare_queue(
                self.dead_letter_queue, durable=True, arguments={"x-queue-type": self._queue_type}
            )
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-jobyard-reason": reason[:1000]},
                ),
                routing_key=self.dead_letter_queue,
                mandatory=True,
                timeout=self._publish_timeout,
            )
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ connection failed: {exc!r}") from exc

    # --- consuming ----------------------------------------------------------------------------------
    async def consume(self, queues: Sequence[str], prefetch: int, on_message: OnMessage) -> RabbitConsumer:
        consumer = RabbitConsumer(self, queues, prefetch, on_message)
        self._consumers.add(consumer)
        if self._connection is not None and not self._connection.is_closed:
            try:
                await consumer._start(self._connection)
            except _CONNECTION_ERRORS as exc:
                log.warning("could not start consuming yet (%s); will on reconnect", exc)
        return consumer

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        if self._connection is None or self._connection.is_closed:
            raise BrokerUnavailable("RabbitMQ is not connected")
        depths: dict[str, int] = {}
        try:
            channel = await self._connection.channel()
            try:
                for name in queues:
                    try:
                        queue = await channel.declare_queue(self.queue_name(name), passive=True)
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        depths[name] = 0
                        channel = await self._connection.channel()
                        continue
                    depths[name] = queue.declaration_result.message_count or 0
            finally:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await channel.close()
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ connection failed: {exc!r}") from exc
        return depths

    async def ping(self) -> None:
        if not self.connected:
            raise BrokerUnavailable("RabbitMQ is not connected")
