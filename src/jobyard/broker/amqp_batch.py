"""Publish many messages on one aiormq channel as one socket write, each with its own publisher confirm.

aiormq's ``basic_publish`` takes the channel's lock, builds one message's frames and queues them for its writer,
one message at a time: a batch of N messages costs N lock rounds, N writer wake-ups and N ``write`` system calls,
and the broker reads them as N small packets. Profiles of the relay and the API showed that per-message path as
the largest part of publishing domain events and work messages (about 170 µs of client CPU per message on the
development machine, against about 90 µs when a batch of ten goes out in one write; RabbitMQ's own CPU per
message falls by about a fifth as well).

``publish_batch`` does what ``basic_publish`` does for each message (a delivery tag, a confirmation future
registered where the channel's reader resolves it, the message id a ``basic.return`` is matched by), but for the
whole batch under one hold of the channel's lock, and queues all frames as one write. The broker sees the same
frames in the same order, so confirms, returns (``mandatory``) and nacks come back exactly as for single
publishes and are resolved by aiormq's own reader.

It relies on attributes of aiormq's ``Channel`` that are not part of its documented API; ``supports`` checks for
them, and callers fall back to one ``basic_publish`` per message when they are missing (another aiormq version).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

_NEEDED = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "create_future",
    "number",
    "max_content_size",
    "publisher_confirms",
)


def supports(channel: Any) -> bool:
    """Whether ``channel`` (an aiormq channel with publisher confirms) has what ``publish_batch`` uses."""
    return all(hasattr(channel, name) for name in _NEEDED) and bool(channel.publisher_confirms)


def _bodies(body: bytes, limit: int) -> list[ContentBody]:
    if not body:
        return []
    if len(body) < limit:
        return [ContentBody(body)]
    return [ContentBody(body[i : i + limit]) for i in range(0, len(body), limit)]


async def publish_batch(
    channel: Any,  # an aiormq.Channel that ``supports``: the attributes used are not on its abstract type
    exchange: str,
    items: Sequence[tuple[str, bytes]],
    *,
    mandatory: bool,
    content_type: str = "application/json",
) -> list[Any]:
    """Publish persistent ``(routing key, body)`` messages in order and return their confirmations.

    Each result is what ``basic_publish`` would have returned for that message (``Basic.Ack``, or the returned
    message when the channel does not raise on returns); a nack, a return on a channel that raises on returns,
    or the channel closing raises (the first such error, once every confirmation has settled). Cancelling the
    caller cancels the confirmations still pending (the broker's later replies to them are ignored).
    """
    if not items:
        return []
    for routing_key, _ in items:
        if len(routing_key.encode()) > 255:  # as basic_publish checks: a short string on the wire
            raise ValueError(f"routing key too long (max 255 bytes): {routing_key[:60]!r}...")
    futures: list[asyncio.Future[Any]] = []
    frames: list[Any] = []
    async with channel.lock:
        first_tag = channel.delivery_tag
        message_ids: list[str] = []
        try:
            for routing_key, body in items:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                message_id = os.urandom(16).hex()
                future = channel.create_future()
                channel.confirmations[tag] = future
                channel.message_id_delivery_tag[message_id] = tag
                message_ids.append(message_id)
                futures.append(future)
                frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory))
                frames.append(
                    ContentHeader(
                        properties=spec.Basic.Properties(
                            content_type=content_type, delivery_mode=2, message_id=message_id
                        ),
                        body_size=len(body),
                    )
                )
                frames.extend(_bodies(body, channel.max_content_size))
            payload = ChannelFrame.marshall(frames=frames, channel_number=channel.number)
            await channel.write_queue.put(payload)
        except BaseException:
            # Nothing reached the writer: give the sequence numbers back while the lock is still held, as
            # basic_publish does, so the next publish's tags match the broker's count.
            channel.delivery_tag = first_tag
            for tag in range(first_tag + 1, first_tag + 1 + len(futures)):
                channel.confirmations.pop(tag, None)
            for message_id in message_ids:
                channel.message_id_delivery_tag.pop(message_id, None)
            for future in futures:
                future.cancel()
            raise
    try:
        # Every confirmation settles before this returns or raises, as a gather of basic_publish calls would.
        results = await asyncio.gather(*futures, return_exceptions=True)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        for message_id in message_ids:
            channel.message_id_delivery_tag.pop(message_id, None)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)
