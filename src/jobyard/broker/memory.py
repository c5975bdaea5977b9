"""In-process broker with RabbitMQ's delivery semantics: prefetch windows, manual acks, redelivery.

Used by `jobyard dev` and unit tests. Messages live in this process only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Sequence

from jobyard.broker.base import OnMessage
from jobyard.errors import BrokerUnavailable
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.broker.memory")


class MemoryDelivery:
    __slots__ = ("_consumer", "_done", "body", "queue", "redelivered")

    def __init__(self, consumer: MemoryConsumer, queue: str, body: bytes, redelivered: bool) -> None:
        self._consumer = consumer
        self.queue = queue
        self.body = body
        self.redelivered = redelivered
        self._done = False

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._consumer._settle(self, requeue=False)

    async def reject(self, requeue: bool) -> None:
        if not self._done:
            self._done = True
            self._consumer._settle(self, requeue=requeue)


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, queues: Sequence[str], prefetch: int, on_message: OnMessage) -> None:
        self._broker = broker
        self.queues = list(queues)
        self.prefetch = max(1, prefetch)
        self._on_message = on_message
        self._unacked: set[MemoryDelivery] = set()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled = False
        self._loop = asyncio.create_task(self._dispatch())

    def _settle(self, delivery: MemoryDelivery, requeue: bool) -> None:
        self._unacked.discard(delivery)
        if requeue:
            self._broker._queues[delivery.queue].appendleft((delivery.body, True))
            self._broker._notify()
        self._wakeup.set()

    async def _dispatch(self) -> None:
        while not self._cancelled:
            handed = False
            for name in self.queues:
                queue = self._broker._queues[name]
                while queue and len(self._unacked) < self.prefetch and not self._cancelled:
                    body, redelivered = queue.popleft()
                    delivery = MemoryDelivery(self, name, body, redelivered)
                    self._unacked.add(delivery)
                    task = asyncio.create_task(self._deliver(delivery))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    handed = True
            if not handed:
                self._wakeup.clear()
                await self._wakeup.wait()

    async def _deliver(self, delivery: MemoryDelivery) -> None:
        try:
            await self._on_message(delivery)
        except Exception:
            log.exception("message handler failed; the message is requeued")
            await delivery.reject(requeue=True)

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._wakeup.set()
        await stop_tasks([self._loop])
        self._broker._consumers.discard(self)
        # Like a closed AMQP channel: whatever was not acked goes back, flagged as redelivered.
        for delivery in list(self._unacked):
            delivery._done = True
            self._broker._queues[delivery.queue].appendleft((delivery.body, True))
        self._unacked.clear()
        self._broker._notify()


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one dot-separated word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] in ("*", k[0])) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


class MemoryBroker:
    """Queues are deques of (body, redelivered); consumers pull while their prefetch window has room.

    Domain events go to the queues bound with ``bind_events`` (the in-process stand-in for a topic exchange).
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str, deque[tuple[bytes, bool]]] = defaultdict(deque)
        self._consumers: set[MemoryConsumer] = set()
        self._event_bindings: list[tuple[str, asyncio.Queue[tuple[str, bytes]]]] = []
        self.dead: list[tuple[bytes, str]] = []
        self._open = False

    def bind_events(self, pattern: str = "#") -> asyncio.Queue[tuple[str, bytes]]:
        """A queue receiving (routing key, body) of every domain event matching the topic ``pattern``."""
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._event_bindings.append((pattern, queue))
        return queue

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        if not self._open:
            raise BrokerUnavailable("the in-memory broker is closed")
        for routing_key, body in events:
            for pattern, queue in self._event_bindings:
                if topic_matches(pattern, routing_key):
                    queue.put_nowait((routing_key, body))

    @property
    def connected(self) -> bool:
        return self._open

    async def connect(self) -> None:
        self._open = True

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.cancel()
        self._open = False

    def _notify(self) -> None:
        for consumer in self._consumers:
            consumer._wakeup.set()

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not self._open:
            raise BrokerUnavailable("the in-memory broker is closed")
        for queue, body in messages:
            self._queues[queue].append((body, False))
        self._notify()

    async def consume(self, queues: Sequence[str], prefetch: int, on_message: OnMessage) -> MemoryConsumer:
        if not self._open:
            raise BrokerUnavailable("the in-memory broker is closed")
        consumer = MemoryConsumer(self, queues, prefetch, on_message)
        self._consumers.add(consumer)
        return consumer

    async def dead_letter(self, body: bytes, reason: str) -> None:
        self.dead.append((body, reason))

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        return {name: len(self._queues[name]) for name in queues}

    async def ping(self) -> None:
        if not self._open:
            raise BrokerUnavailable("the in-memory broker is closed")
