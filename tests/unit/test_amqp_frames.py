"""The publish frames jobyard encodes itself are the bytes pamqp's marshalling makes for the same frames."""

from __future__ import annotations

from typing import Any

import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from jobyard.broker.amqp_batch import encode_publish

LIMIT = 131_064  # RabbitMQ's default frame_max (131,072) less a frame's 8 bytes


def pamqp_frames(
    channel: int, exchange: str, routing_key: str, body: bytes, mandatory: bool, content_type: str, message_id: str
) -> bytes:
    frames: list[object] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
        ContentHeader(
            properties=spec.Basic.Properties(content_type=content_type, delivery_mode=2, message_id=message_id),
            body_size=len(body),
        ),
    ]
    frames += [ContentBody(body[i : i + LIMIT]) for i in range(0, len(body), LIMIT)]
    return ChannelFrame.marshall(frames=frames, channel_number=channel).payload  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("channel", "exchange", "routing_key", "body", "mandatory"),
    [
        (1, "", "jobyard.q.default", b'{"v":1,"actions":[]}', True),
        (7, "jobyard.events", "job.completed", b"{}", False),
        (65535, "jobyard.events", "action.failed", b"", False),  # no body frame at all
        (2, "", "q", b"x" * LIMIT, True),  # exactly one full frame
        (3, "", "q", bytes(range(256)) * 1100, True),  # three body frames, the last one short
        (4, "ex-1_a.b:c", "cl\u00e9.\u00fc" * 36, b"\xff\x00" * 10, False),  # a UTF-8 routing key, 252 bytes
    ],
)
def test_the_frames_are_the_bytes_pamqp_makes(
    channel: int, exchange: str, routing_key: str, body: bytes, mandatory: bool
) -> None:
    message_id = "5f0c2d9e4b7a41d08c3e2a1b6f9d7e05"
    ours = encode_publish(
        channel, exchange, routing_key, body,
        mandatory=mandatory, content_type="application/json", message_id=message_id, max_content_size=LIMIT,
    )  # fmt: skip
    assert ours == pamqp_frames(channel, exchange, routing_key, body, mandatory, "application/json", message_id)


def test_names_longer_than_a_short_string_are_refused() -> None:
    common: dict[str, Any] = {"mandatory": True, "content_type": "application/json", "message_id": "m"}
    with pytest.raises(ValueError, match="routing key too long"):
        encode_publish(1, "", "k" * 256, b"{}", max_content_size=LIMIT, **common)
    with pytest.raises(ValueError, match="exchange name too long"):
        encode_publish(1, "e" * 256, "k", b"{}", max_content_size=LIMIT, **common)
