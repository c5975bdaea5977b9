"""The relay: publishes the outbox to the broker with confirms, and reaps actions whose lease expired.

Several relays may run at once: outbox rows are locked with SKIP LOCKED and every reaper write is fenced.
A crash between publish and delete republishes the rows; the worker's claim turns the copies into no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from jobyard import messages
from jobyard.broker.base import Broker
from jobyard.config import Settings
from jobyard.errors import BrokerError, BrokerUnavailable, StoreError
from jobyard.events import EventBus
from jobyard.model import Outcome, OutcomeKind, retry_delay
from jobyard.store.repository import Leadership, OutboxRow, Repository

log = logging.getLogger("jobyard.relay")


def pack_rows(rows: Sequence[OutboxRow], per_message: int) -> list[tuple[str, bytes]]:
    """Group rows by queue, then pack up to ``per_message`` encoded actions into each message body."""
    by_queue: dict[str, list[bytes]] = defaultdict(list)
    for row in rows:
        by_queue[row.queue].append(row.body)
    out: list[tuple[str, bytes]] = []
    for queue, bodies in by_queue.items():
        for start in range(0, len(bodies), per_message):
            out.append((queue, messages.pack(bodies[start : start + per_message])))
    return out


class Relay:
    def __init__(self, *, settings: Settings, repo: Repository, broker: Broker, events: EventBus | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.broker = broker
        self.events = events
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.reaped = 0
        self.is_leader = False

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="jobyard-relay-publish"),
            asyncio.create_task(self._reap_loop(), name="jobyard-relay-reaper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # --- outbox -------------------------------------------------------------------------------------
    async def _publish(self, rows: list[OutboxRow]) -> None:
        await self.broker.publish(pack_rows(rows, self.settings.message_actions))

    async def publish_once(self) -> int:
        """Publish one batch of due rows; returns how many were published."""
        count = await self.repo.publish_outbox(self.settings.relay_batch, self._publish)
        self.published += count
        return count

    async def _publish_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                if not self.broker.connected:
                    await asyncio.sleep(min(self.settings.relay_interval, 1.0))
                    continue
                count = await self.publish_once()
                backoff = 0.1
                if count >= self.settings.relay_batch:
                    continue  # more is waiting
                await self.repo.wait_for_outbox(await self._idle_timeout())
            except (BrokerUnavailable, StoreError, BrokerError) as exc:
                log.warning("relay: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 5.0)

    async def _idle_timeout(self) -> float:
        """Sleep until the next scheduled row (a delayed retry) is due, at most ``relay_interval``."""
        due = await self.repo.next_outbox_due()
        if due is None:
            return self.settings.relay_interval
        wait = (due - datetime.now(UTC)).total_seconds()
        return max(0.005, min(self.settings.relay_interval, wait))

    # --- lease reaper -------------------------------------------------------------------------------
    async def reap_once(self) -> int:
        """Return actions whose worker vanished (lease expired) to the queue, or fail them if out of attempts."""
        expired = await self.repo.expired_leases(limit=500)
        outcomes = []
        for action in expired:
            error = f"WorkerLost: the lease of attempt {action.attempt} expired (worker died or stalled)"
            if action.attempt < action.max_attempts:
                delay = retry_delay(action.attempt, self.settings.retry_base_delay, self.settings.retry_max_delay)
                body = messages.encode_claimed(action)
                outcomes.append(
                    Outcome(
                        action.id,
                        action.attempt,
                        OutcomeKind.RETRY,
                        error=error,
                        retry_in=delay,
                        queue=action.queue,
                        message_body=body,
                    )
                )
            else:
                outcomes.append(Outcome(action.id, action.attempt, OutcomeKind.FAILED, error=error))
        completed = await self.repo.complete_actions(outcomes)
        if completed:
            log.warning("reaper: %d actions with expired leases handed back", len(completed))
            if self.events is not None:
                await self.events.publish(
                    [
                        {"type": "action.status", "job_id": str(c.job_id), "action_id": str(c.action_id),
                         "status": c.status.value, "error": "WorkerLost"}
                        for c in completed
                    ]
                )  # fmt: skip
        self.reaped += len(completed)
        return len(completed)

    async def _reap_loop(self) -> None:
        """Reap on the leader only: one relay holds the store's leader lock; the others stand by."""
        interval = max(0.2, min(5.0, self.settings.lease_seconds / 4))
        leadership: Leadership | None = None
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    if leadership is not None and not await leadership.alive():
                        log.warning("relay lost its leadership (database connection gone)")
                        await leadership.release()
                        leadership = None
                    if leadership is None:
                        leadership = await self.repo.acquire_leadership("relay")
                        if leadership is not None:
                            log.info("this relay is now the leader (lease reaper)")
                    self.is_leader = leadership is not None
                    if leadership is not None:
                        await self.reap_once()
                        await self.repo.prune_expired_dedup_keys()
                except StoreError as exc:
                    log.warning("reaper: %s", exc)
        finally:
            self.is_leader = False
            if leadership is not None:
                await leadership.release()
