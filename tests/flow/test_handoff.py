"""The handoff: the API publishes the messages of the jobs it stores; the relay publishes what it could not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jobyard.demo import yard as demo_yard
from jobyard.errors import BrokerUnavailable
from tests.harness import stack


async def _outbox_once_deleted(repo: Any, timeout: float = 5.0) -> int:
    """The outbox's size once the handoff has deleted the rows it published (or after ``timeout``).

    The handoff deletes them after the broker's confirms, while the worker may already be running the job: a job
    can be done before its rows are gone (CI saw 2 rows left on the embedded store, whose writes take turns).
    """
    deadline = time.monotonic() + timeout
    while (size := await repo.outbox_size()) and time.monotonic() < deadline:  # noqa: ASYNC110 - a table
        await asyncio.sleep(0.01)
    return size


async def test_the_api_publishes_a_new_jobs_messages_itself_and_deletes_their_outbox_rows(make_settings: Any) -> None:
    async with stack(make_settings(message_actions=2), demo_yard) as s:
        handoff = s.runtime.handoff
        assert handoff is not None
        job_id = await s.submit([{"type": "demo.noop"}] * 3)  # two messages: two actions, then one
        status = await s.wait(job_id)
        outbox = await _outbox_once_deleted(s.runtime.repo)
    assert status["status"] == "succeeded"
    assert handoff.published == 2 and handoff.left == 0
    assert s.relay.published == 0  # the relay had nothing to do
    assert outbox == 0


async def test_jobs_submitted_together_are_all_published_by_the_api(make_settings: Any) -> None:
    async with stack(make_settings(message_actions=1), demo_yard) as s:
        handoff, repo = s.runtime.handoff, s.runtime.repo
        assert handoff is not None
        job_ids = await asyncio.gather(*(s.submit([{"type": "demo.noop"}]) for _ in range(10)))
        statuses = [await s.wait(job_id) for job_id in job_ids]
        outbox = await _outbox_once_deleted(repo)
    assert all(status["status"] == "succeeded" for status in statuses)
    assert handoff.published == 10 and handoff.left == 0  # every job's message, whichever group stored it
    assert s.relay.published == 0 and outbox == 0  # none left for the relay: all rows were handed over
    if repo.dialect == "postgresql":
        assert repo.job_inserts.items == 10 and repo.job_inserts.runs < 10  # stored in groups


async def test_messages_the_api_could_not_publish_are_published_by_the_relay_after_the_hold(
    make_settings: Any,
) -> None:
    async with stack(make_settings(outbox_hold=1.0), demo_yard) as s:
        handoff = s.runtime.handoff
        assert handoff is not None
        real = handoff.broker

        class Refusing:
            connected = True

            async def publish(self, messages: Any) -> None:
                raise BrokerUnavailable("refused for this test")

        handoff.broker = Refusing()  # type: ignore[assignment]
        submitted = time.monotonic()
        job_id = await s.submit([{"type": "demo.noop"}] * 2)
        status = await s.wait(job_id)
        waited = time.monotonic() - submitted
        handoff.broker = real
    assert status["status"] == "succeeded"
    assert handoff.left == 1 and handoff.published == 0
    assert s.relay.published == 1
    assert waited >= 1.0  # the relay left the rows alone for the hold


async def test_a_job_whose_api_died_before_publishing_goes_out_with_the_relay(make_settings: Any) -> None:
    async with stack(make_settings(outbox_hold=0.5), demo_yard) as s:
        handoff = s.runtime.handoff
        assert handoff is not None
        handoff.offer = lambda row_ids, messages: None  # type: ignore[method-assign]  # gone right after the commit
        job_id = await s.submit([{"type": "demo.noop"}])
        status = await s.wait(job_id)
    assert status["status"] == "succeeded" and s.relay.published == 1 and handoff.published == 0


async def test_without_the_handoff_the_relay_publishes_everything_at_once(make_settings: Any) -> None:
    async with stack(make_settings(publish_on_submit=False), demo_yard) as s:
        assert s.runtime.handoff is None
        submitted = time.monotonic()
        job_id = await s.submit([{"type": "demo.noop"}])
        status = await s.wait(job_id)
        waited = time.monotonic() - submitted
    assert status["status"] == "succeeded" and s.relay.published == 1
    assert waited < 5.0  # not held back (the default hold is 5 s)
