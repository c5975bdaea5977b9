"""The broker protocol: publish batches with confirms, consume with prefetch and manual acks.

Two implementations: ``memory`` (one process, `jobyard dev` and unit tests) and ``rabbitmq``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol


class Delivery(Protocol):
    body: bytes
    redelivered: bool

    async def ack(self) -> None: ...

    async def reject(self, requeue: bool) -> None: ...


OnMessage = Callable[[Delivery], Awaitable[None]]


class Consumer(Protocol):
    async def cancel(self) -> None:
        """Stop receiving; unacked deliveries go back to their queues."""


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Connect, or start reconnecting in the background; never blocks start-up on the broker."""

    async def close(self) -> None: ...

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (queue, body) pairs durably; return once the broker confirmed every one, else raise."""

    async def consume(self, queues: Sequence[str], prefetch: int, on_message: OnMessage) -> Consumer: ...

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish (routing key, body) pairs to the topic exchange of domain events; return once confirmed."""

    async def dead_letter(self, body: bytes, reason: str) -> None:
        """Park an undeliverable body (malformed, unknown type) in the dead-letter queue with the reason."""

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]: ...

    async def ping(self) -> None: ...
