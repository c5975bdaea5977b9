"""Message encoding and time-ordered ids."""

from __future__ import annotations

import copy
import pickle
import time
import uuid

import pytest

from jobyard import messages
from jobyard.ids import uuid7, uuid7_many


def test_packed_actions_unpack_to_the_same_fields() -> None:
    a, j = uuid.uuid4(), uuid.uuid4()
    body = messages.pack([messages.encode_action(a, j, "demo.noop", "q", {"x": [1, 2]}, 3, 12.5)] * 2)
    decoded = messages.unpack(body)
    assert len(decoded) == 2
    assert decoded[0] == messages.ActionMessage(a, j, "demo.noop", "q", {"x": [1, 2]}, 3, 12.5)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"v": 2, "actions": []}', b'{"v": 1, "actions": [{"id": "nope"}]}', b'{"v":1}'],
)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(messages.MalformedMessage):
        messages.unpack(body)


def test_single_actions_are_packed_by_queue_up_to_the_limit() -> None:
    body = messages.encode_action(uuid.uuid4(), uuid.uuid4(), "t", "x", None, 1, 1)
    rows = [("a" if i % 2 else "b", body) for i in range(7)]
    packed = messages.pack_by_queue(rows, per_message=2)
    assert [q for q, _ in packed] == ["b", "b", "a", "a"]
    assert sum(len(messages.unpack(body)) for _, body in packed) == 7


def test_bodies_packed_at_submission_go_out_as_they_are() -> None:
    job = uuid.uuid4()
    one = [messages.encode_action(uuid.uuid4(), job, "t", "a", i, 1, 1) for i in range(3)]
    rows = [("a", messages.pack(one)), ("a", one[0]), ("a", one[1])]
    packed = messages.pack_by_queue(rows, per_message=10)
    assert packed == [("a", messages.pack(one)), ("a", messages.pack(one[:2]))]
    assert messages.is_packed(messages.pack(one)) and not messages.is_packed(one[0])


def test_a_jobs_actions_are_chunked_per_queue_in_order() -> None:
    assert messages.chunks(["a", "b", "a", "a", "b"], 2) == [[0, 2], [3], [1, 4]]
    assert messages.chunks(["a"] * 3, 1) == [[0], [1], [2]]


def test_uuid7_is_time_ordered_and_unique() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert all(i.version == 7 for i in ids[:10])


def test_uuid7_many_continues_the_same_order_as_uuid7() -> None:
    ids = [uuid7()]
    for size in (1, 10, 5000, 0, 3):  # 5000 at once overflows the 12-bit counter within one millisecond
        ids += uuid7_many(size)
        ids.append(uuid7())
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 5 + 5014 + 1
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    now_ms = time.time_ns() // 1_000_000
    # The time field is the time, the milliseconds an overflowing batch borrows included.
    assert all(abs((i.int >> 80) - now_ms) < 60_000 for i in ids)
    randoms = {i.int & ((1 << 62) - 1) for i in uuid7_many(1000)}
    assert len(randoms) == 1000  # each id has its own random bits, not a shared or repeated slice


def test_uuid7s_are_the_ids_the_uuid_constructor_makes() -> None:
    """They are built without ``UUID``'s checks: the same value, hash, text, pickle and flags as ``UUID(int=)``."""
    for made in [uuid7(), *uuid7_many(10)]:
        plain = uuid.UUID(int=made.int)
        assert made == plain and hash(made) == hash(plain) and str(made) == str(plain) and repr(made) == repr(plain)
        assert made.is_safe is plain.is_safe is uuid.SafeUUID.unknown
        assert pickle.loads(pickle.dumps(made)) == plain and copy.copy(made) == plain
        assert isinstance(made, uuid.UUID) and type(made) is uuid.UUID
