"""The relay: publishes the outbox to the broker with confirms; its leader runs the store's periodic duties.

Several relays may run at once: outbox rows are locked with SKIP LOCKED and every reaper write is fenced.
A crash between publish and delete republishes the rows; the worker's claim turns the copies into no-ops.
One relay leads (a PostgreSQL advisory lock; on SQLite the single process) and runs the duties that must not
run twice at once: the lease reaper, the scheduler, domain events and the job.ready sweep, webhook deliveries,
and retention.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from jobyard import messages
from jobyard.broker.base import Broker
from jobyard.config import Settings
from jobyard.domain_events import EventRow
from jobyard.errors import BrokerError, BrokerUnavailable, JobyardError, StoreError
from jobyard.events import EventBus
from jobyard.metrics import Metrics
from jobyard.model import Outcome, OutcomeKind, retry_delay
from jobyard.retention import Pruner
from jobyard.scheduler import Scheduler
from jobyard.sdk import Yard
from jobyard.store.repository import Leadership, OutboxRow, Repository
from jobyard.tasks import stop_tasks
from jobyard.webhook_sender import WebhookSender

log = logging.getLogger("jobyard.relay")
T = TypeVar("T")


EVENT_BATCH = 500
RETENTION_EVERY = 60.0


class Relay:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repository,
        broker: Broker,
        events: EventBus | None = None,
        yard: Yard | None = None,
        metrics: Metrics | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.broker = broker
        self.events = events
        self.metrics = metrics
        self.scheduler = Scheduler(settings, repo, yard)
        self.webhooks = webhooks or WebhookSender(settings, repo)
        self.pruner = Pruner(settings, repo)
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.reaped = 0
        self.events_published = 0
        self.is_leader = False

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="jobyard-relay-publish"),
            asyncio.create_task(self._leader_loop(), name="jobyard-relay-leader"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks = []
        await self.webhooks.close()

    # --- outbox -------------------------------------------------------------------------------------
    async def _publish(self, rows: list[OutboxRow]) -> None:
        bodies = [(row.queue, row.body) for row in rows]
        await self.broker.publish(messages.pack_by_queue(bodies, self.settings.message_actions))

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

    # --- leader duties ------------------------------------------------------------------------------
    async def _publish_events(self, rows: list[EventRow]) -> None:
        await self.broker.publish_events([(row.type, row.encode()) for row in rows])

    async def dispatch_events_once(self) -> int:
        """Publish one batch of domain events (and queue their webhook deliveries); how many were published."""
        if not self.broker.connected:
            return 0
        count = await self.repo.dispatch_events(EVENT_BATCH, self._publish_events)
        self.events_published += count
        if self.metrics is not None and count:
            self.metrics.events_published.inc(count)
        return count

    async def lead_once(self, *, reap: bool = True, prune: bool = False) -> None:
        """One round of the leader's duties (tests call it directly to run them now)."""
        await self._duty("job.ready sweep", self.repo.mark_ready_jobs())
        await self._duty("scheduler", self.scheduler.fire_due())
        while await self._duty("domain events", self.dispatch_events_once()) == EVENT_BATCH:
            pass
        await self._duty("webhooks", self._deliver_webhooks())
        if reap:
            await self._duty("reaper", self.reap_once())
            await self._duty("dedup keys", self.repo.prune_expired_dedup_keys())
        if prune:
            await self._duty("retention", self._prune())

    async def _deliver_webhooks(self) -> int:
        before = (self.webhooks.delivered, self.webhooks.failures, self.webhooks.given_up)
        count = await self.webhooks.deliver_due()
        if self.metrics is not None and count:
            delivered, failures, given_up = (
                self.webhooks.delivered - before[0],
                self.webhooks.failures - before[1],
                self.webhooks.given_up - before[2],
            )
            self.metrics.webhook_attempts.labels("delivered").inc(delivered)
            self.metrics.webhook_attempts.labels("failed").inc(failures)
            self.metrics.webhook_attempts.labels("given_up").inc(given_up)
        return count

    async def _prune(self) -> None:
        pruned = await self.pruner.prune_once()
        if self.metrics is not None and pruned["jobs"]:
            self.metrics.pruned_jobs.inc(pruned["jobs"])

    async def _duty(self, name: str, work: Awaitable[T]) -> T | None:
        try:
            return await work
        except JobyardError as exc:
            log.warning("leader duty %s: %s", name, exc)
            return None

    async def _leader_loop(self) -> None:
        """Lead when the store's leader lock is free; the others stand by and try again every election interval."""
        elect_every = max(0.2, min(5.0, self.settings.lease_seconds / 4))
        tick = max(0.05, min(0.5, self.settings.relay_interval))
        loop = asyncio.get_running_loop()
        leadership: Leadership | None = None
        next_election = next_reap = loop.time()
        next_prune = loop.time() + min(RETENTION_EVERY, elect_every * 4)
        pause = 0.0  # the first election runs at once: a relay that starts alone leads (and publishes) right away
        try:
            while True:
                await asyncio.sleep(pause)
                pause = elect_every
                now = loop.time()
                try:
                    if leadership is not None and now >= next_election:
                        next_election = now + elect_every
                        if not await leadership.alive():
                            log.warning("relay lost its leadership (database connection gone)")
                            await leadership.release()
                            leadership = None
                    if leadership is None:
                        leadership = await self.repo.acquire_leadership("relay")
                        if leadership is not None:
                            log.info("this relay is now the leader (reaper, scheduler, events, webhooks, retention)")
                    self.is_leader = leadership is not None
                except StoreError as exc:
                    log.warning("leader election: %s", exc)
                    continue
                if leadership is None:
                    continue
                pause = tick
                reap, prune = now >= next_reap, now >= next_prune
                if reap:
                    next_reap = now + elect_every
                if prune:
                    next_prune = now + RETENTION_EVERY
                await self.lead_once(reap=reap, prune=prune)
        finally:
            self.is_leader = False
            if leadership is not None:
                await leadership.release()
