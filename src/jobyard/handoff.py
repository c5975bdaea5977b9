"""The handoff: an API process publishes the messages of the jobs it has just stored, skipping the relay's hop.

A submission's outbox rows are written held back from the relay for ``outbox_hold`` seconds. Right after the
commit, the API process that wrote them publishes them (with confirms and ``mandatory``, as the relay does) and
deletes the rows. Whatever it does not get done (the broker is down, the process dies, the delete fails) the relay
does when the rows come due; a message published twice is harmless, since the worker's claim turns the copy into
a no-op. The outbox remains the guarantee; the handoff only takes the relay's wake-up, its read of the outbox and
its transaction off the way from submit to start.

Submissions that arrive while a publish is in flight go out together in the next one: one confirm wait and one
delete for all of them, and their single actions packed by queue up to ``message_actions`` a message, as the relay
packs due rows (a stream of one-action jobs would otherwise cost a message, a delivery and a claim each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jobyard.broker.base import Broker
from jobyard.errors import BrokerError, BrokerUnavailable, StoreError
from jobyard.messages import pack_by_queue
from jobyard.store.repository import Repository
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.handoff")


class Handoff:
    """Publishes newly stored jobs' messages from the process that stored them (see the module docstring)."""

    def __init__(
        self, repo: Repository, broker: Broker, *, hold: float, batch: int = 500, message_actions: int = 1
    ) -> None:
        self.repo = repo
        self.broker = broker
        self.hold = hold
        self.batch = batch  # rows per publish
        self.message_actions = message_actions
        self.published = 0  # messages this process published
        self.left = 0  # messages left to the relay (broker refused or unreachable)
        self._offers: list[tuple[list[int], list[tuple[str, bytes]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Whether to hand it a submission now (otherwise the relay publishes it at once, as without a handoff)."""
        return self._task is not None and self.broker.connected

    def offer(self, row_ids: list[int], messages: list[tuple[str, bytes]]) -> None:
        """Committed outbox rows and their messages (in any order): publish them soon, then delete the rows."""
        if self._task is None:
            return  # stopped meanwhile: the relay publishes them once the hold is over
        self._offers.append((row_ids, messages))
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="jobyard-handoff")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop; what was offered and not yet published gets one last try (the relay has it otherwise)."""
        task, self._task = self._task, None
        if task is None:
            return
        await stop_tasks([task])
        if self._offers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_all(), timeout)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_all()
            except Exception:  # a bug must not stop the handoff: the relay publishes what this round did not
                log.exception("handoff: publishing failed; the relay publishes those messages after the hold")

    async def _flush_all(self) -> None:
        while self._offers:
            offers, self._offers = self._offers, []
            row_ids: list[int] = []
            rows: list[tuple[str, bytes]] = []
            for ids, bodies in offers:
                row_ids += ids
                rows += bodies
                if len(rows) >= self.batch:
                    await self._send(row_ids, rows)
                    row_ids, rows = [], []
            if rows:
                await self._send(row_ids, rows)

    async def _send(self, row_ids: list[int], rows: list[tuple[str, bytes]]) -> None:
        """Publish the rows' bodies (packed, confirmed); only then delete the rows."""
        # A row holds one encoded action or a packed message; the broker carries packed messages only.
        messages = pack_by_queue(rows, self.message_actions)
        try:
            await self.broker.publish(messages)
        except (BrokerUnavailable, BrokerError) as exc:
            self.left += len(messages)
            log.info("handoff: %d messages left to the relay (%s)", len(messages), exc)
            return
        self.published += len(messages)
        await self._delete(row_ids)

    async def _delete(self, row_ids: list[int]) -> None:
        """Delete the rows whose messages were published (the relay republishes any left: harmless copies)."""
        if not row_ids:
            return
        try:
            await self.repo.delete_outbox_rows(row_ids)
        except StoreError as exc:
            log.info("handoff: %d outbox rows not deleted (%s); the relay publishes them again", len(row_ids), exc)
