"""The handoff packs the single actions of submissions that go out together, as the relay packs due rows."""

from __future__ import annotations

import uuid

from jobyard import messages
from jobyard.errors import BrokerUnavailable
from jobyard.handoff import Handoff


class _Broker:
    connected = True

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, batch: list[tuple[str, bytes]]) -> None:
        if self.refuse:
            raise BrokerUnavailable("refused for this test")
        self.published += batch


class _Repo:
    def __init__(self) -> None:
        self.deleted: list[int] = []

    async def delete_outbox_rows(self, row_ids: list[int]) -> None:
        self.deleted += row_ids


def _action(queue: str) -> bytes:
    return messages.encode_action(uuid.uuid4(), uuid.uuid4(), "t", queue, None, 1, 1)


def _handoff(broker: _Broker, repo: _Repo, message_actions: int) -> Handoff:
    handoff = Handoff(repo, broker, hold=5.0, message_actions=message_actions)  # type: ignore[arg-type]
    handoff._task = object()  # type: ignore[assignment]  # accept offers without running the loop
    return handoff


async def test_one_action_jobs_offered_together_go_out_packed_by_queue() -> None:
    broker, repo = _Broker(), _Repo()
    handoff = _handoff(broker, repo, message_actions=2)
    whole = messages.pack([_action("a"), _action("a")])
    handoff.offer([1], [("a", _action("a"))])
    handoff.offer([2], [("b", _action("b"))])
    handoff.offer([3], [("a", _action("a"))])
    handoff.offer([4], [("a", whole)])  # a job's own packed message goes out as it is
    handoff.offer([5], [("a", _action("a"))])
    await handoff._flush_all()
    queues = sorted(queue for queue, _ in broker.published)
    assert queues == ["a", "a", "a", "b"]  # a: the packed job, then 3 singles in 2 messages; b: 1
    sizes: dict[str, list[int]] = {}
    for queue, body in broker.published:
        assert messages.is_packed(body)
        sizes.setdefault(queue, []).append(len(messages.unpack(body)))
    assert sorted(sizes["a"]) == [1, 2, 2] and sizes["b"] == [1]
    assert sorted(repo.deleted) == [1, 2, 3, 4, 5]
    assert handoff.published == 4 and handoff.left == 0


async def test_with_one_action_a_message_every_action_goes_alone() -> None:
    broker, repo = _Broker(), _Repo()
    handoff = _handoff(broker, repo, message_actions=1)
    for row in range(3):
        handoff.offer([row], [("a", _action("a"))])
    await handoff._flush_all()
    assert [len(messages.unpack(body)) for _, body in broker.published] == [1, 1, 1]


async def test_rows_whose_publish_was_refused_are_left_to_the_relay() -> None:
    broker, repo = _Broker(refuse=True), _Repo()
    handoff = _handoff(broker, repo, message_actions=10)
    for row in range(3):
        handoff.offer([row], [("a", _action("a"))])
    await handoff._flush_all()
    assert repo.deleted == [] and broker.published == []
    assert handoff.left == 1 and handoff.published == 0  # the one message the three would have made
