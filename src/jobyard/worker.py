"""The worker: receive messages, claim actions in batches, run handlers, record outcomes in batches, then ack.

Flow per action: message → intake → claim (one UPDATE for many) → handler under its time limit →
outcome → completion (one transaction for many, fenced on the attempt) → results to the KV → events → ack.
While the broker is unreachable the worker claims due actions straight from the store instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import enum
import functools
import logging
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from jobyard import jsonutil, messages
from jobyard.broker.base import Broker, Consumer, Delivery
from jobyard.config import Settings
from jobyard.errors import ActionCancelled, ActionTimeout, KVError, PermanentFailure, StoreError, UnknownActionType
from jobyard.events import EventBus
from jobyard.kv import keys
from jobyard.kv.cache import UserCache
from jobyard.kv.results import ResultStore, summarize
from jobyard.live.presence import PresenceBeacon
from jobyard.locks import Lock
from jobyard.logs import bind_action
from jobyard.metrics import Metrics
from jobyard.model import ClaimedAction, Completion, Outcome, OutcomeKind, retry_delay
from jobyard.sdk import ActionContext, ActionDefinition, Yard
from jobyard.store.repository import Repository
from jobyard.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger("jobyard.worker")


CANCEL_GRACE = 2.0  # seconds a cancelled action gets to notice ctx.cancelled before it is interrupted
BUSY_BATCH = 8  # a claim or completion of this many actions marks the worker busy: its next batch may gather
GATHER_STEP = 0.004  # seconds between looks at a gathering batch (it goes as soon as it is full)


class _Interrupt(enum.Enum):
    SOFT_TIMEOUT = "soft time limit"
    CANCELLED = "cancelled on request"
    SHUTDOWN = "worker shutting down"


class _Envelope:
    """One broker delivery and how many of its actions are still unsettled; acked when none are."""

    __slots__ = ("delivery", "pending")

    def __init__(self, delivery: Delivery, pending: int) -> None:
        self.delivery = delivery
        self.pending = pending


@dataclass(slots=True)
class _Intake:
    message: messages.ActionMessage
    envelope: _Envelope | None


class _Attempt:
    """One claimed action while it runs: its handler's task, the pending time-limit timer, and ``done``."""

    __slots__ = ("action", "began", "ctx", "done", "envelope", "handler", "started", "timer")

    def __init__(
        self,
        action: ClaimedAction,
        ctx: ActionContext,
        envelope: _Envelope | None,
        done: asyncio.Future[None],
        started: float,
        began: float,
    ) -> None:
        self.action = action
        self.ctx = ctx
        self.envelope = envelope
        self.done = done  # resolved when the attempt is over (stop() waits on it; late callbacks check it)
        self.started = started  # perf_counter, for the duration metric
        self.began = began  # loop time, for the limits
        self.handler: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Finished:
    outcome: Outcome
    envelope: _Envelope | None
    result: bytes | None = None  # a succeeded action's result, as JSON
    ctx: ActionContext | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    queue: str = ""


async def _gather_step(deadline: float) -> bool:
    """Wait a moment for a gathering batch; False once ``deadline`` (``time.monotonic``) has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    await asyncio.sleep(min(remaining, GATHER_STEP))
    return True


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs actions of the given queues. ``start``/``stop`` are safe to call more than once."""

    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repository,
        broker: Broker,
        results: ResultStore,
        events: EventBus,
        yard: Yard,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        worker_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.repo = repo
        self.broker = broker
        self.results = results
        self.events = events
        self.yard = yard
        self.queues = queues or yard.queues or ["default"]
        self.concurrency = concurrency or settings.worker_concurrency
        self.worker_id = worker_id or new_worker_id()
        self._free = asyncio.Semaphore(self.concurrency)
        self._intake: asyncio.Queue[_Intake] = asyncio.Queue()
        self._finished: asyncio.Queue[_Finished] = asyncio.Queue()
        self._running: dict[UUID, _Attempt] = {}
        self._claim_lock = asyncio.Lock()
        self.user_cache = UserCache(events.kv)
        self._progress_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: Consumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopping = False
        self.processed = 0
        self._durations: dict[tuple[str, str], Any] = {}  # action_duration's children by (type, outcome)
        # worker_batch's children, looked up once: observed once per batch, never per action
        self._claim_sizes = metrics.worker_batch.labels("claim") if metrics is not None else None
        self._complete_sizes = metrics.worker_batch.labels("complete") if metrics is not None else None
        self._presence = PresenceBeacon(events.kv, self.worker_id, settings.presence_interval, self._describe)

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping = False
        self.yard.bind_cache(self.user_cache)
        self._loop = asyncio.get_running_loop()
        self._consumer = await self.broker.consume(self.queues, self.settings.prefetch, self._on_message)
        for loop in (
            self._claim_loop,
            self._complete_loop,
            self._heartbeat_loop,
            self._progress_loop,
            self._poll_loop,
            self._control_loop,
            self._presence_loop,
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"jobyard-worker-{loop.__name__}"))
        log.info("worker %s consuming %s with concurrency %d", self.worker_id, self.queues, self.concurrency)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop consuming, let running actions finish for ``grace`` seconds, then hand the rest back."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._consumer is not None:
            await self._consumer.cancel()  # unacked deliveries go back to the broker
        async with self._claim_lock:  # let a claim in flight launch what it claimed; then claim no more
            for task in self._tasks:
                if task.get_name().endswith(("_claim_loop", "_poll_loop")):
                    task.cancel()
        # Work not yet claimed goes back with its delivery (already returned by the cancel above).
        while not self._intake.empty():
            self._intake.get_nowait()
        running = [attempt.done for attempt in self._running.values()]
        if running:
            log.info("worker %s: waiting up to %gs for %d running actions", self.worker_id, grace, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            if pending:
                # Hand the rest back: each records a RELEASE outcome (queued again, the attempt not counted).
                for attempt in list(self._running.values()):
                    self._interrupt(attempt, _Interrupt.SHUTDOWN)
                await asyncio.wait(pending, timeout=5.0)
        await self._drain_finished()
        await stop_tasks(self._tasks)
        self._tasks.clear()
        await self._presence.leave()
        await self.user_cache.settle()  # the actions' recomputed values still being stored
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._started = False
        log.info("worker %s stopped after %d actions", self.worker_id, self.processed)

    # --- intake -------------------------------------------------------------------------------------
    async def _on_message(self, delivery: Delivery) -> None:
        try:
            actions = messages.unpack(delivery.body)
        except messages.MalformedMessage as exc:
            log.error("malformed message dead-lettered: %s", exc)
            await self.broker.dead_letter(delivery.body, f"malformed: {exc}")
            await delivery.ack()
            return
        if not actions:
            await delivery.ack()
            return
        envelope = _Envelope(delivery, len(actions))
        for action in actions:
            self._intake.put_nowait(_Intake(action, envelope))

    async def _settle(self, envelope: _Envelope | None) -> None:
        if envelope is None:
            return
        envelope.pending -= 1
        if envelope.pending == 0:
            await envelope.delivery.ack()

    # --- claiming -----------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        batch_max = self.settings.worker_batch
        last_at, last_size = 0.0, 0  # the previous claim: when it went out, how many actions it held
        while True:
            behind = not self._intake.empty()  # work arrived while the previous claim was in flight: it may gather
            first = await self._intake.get()
            await self._free.acquire()
            batch = [first]
            try:
                await self._gather_intake(batch, batch_max, self._gather_until(last_at, last_size, behind))
            except asyncio.CancelledError:
                for _ in batch:  # stopping: the batch goes back with its deliveries, its slots are free again
                    self._free.release()
                raise
            last_at, last_size = time.monotonic(), len(batch)
            if self._claim_sizes is not None:
                self._claim_sizes.observe(len(batch))
            async with self._claim_lock:  # stop() waits for a claim in flight, so nothing claimed is left behind
                try:
                    await self._claim_and_run(batch)
                except Exception:  # a bug must not stop the intake: what was claimed comes back with its lease
                    log.exception("claiming %d messages failed", len(batch))

    async def _gather_intake(self, batch: list[_Intake], batch_max: int, deadline: float) -> None:
        """Add to ``batch`` what the intake holds, as far as free slots and ``batch_max`` allow; until ``deadline``
        (``time.monotonic``) also what arrives meanwhile, unless the batch is full before."""
        while True:
            while len(batch) < batch_max and not self._intake.empty() and not self._free.locked():
                await self._free.acquire()
                batch.append(self._intake.get_nowait())
            if len(batch) >= batch_max or self._free.locked() or not await _gather_step(deadline):
                return

    def _gather_until(self, last_at: float, last_size: int, behind: bool) -> float:
        """Until when (``time.monotonic``) a new batch may gather more, or 0 to send it at once.

        A busy worker that is behind sends at most once per ``worker_batch_interval`` after its previous batch, or
        sooner once the batch is full. Busy: its previous batch held at least ``BUSY_BATCH`` actions. Behind: work
        arrived while that batch was in flight (``behind``). Any other worker sends at once, so light load keeps
        its latency, and so does a busy worker that keeps up: one that finds nothing waiting when its previous
        batch is done would only add the wait to each job's start (at 2,000 actions/s in ten-action jobs, waiting
        without being behind raised the p50 from submit to start from about 5–7 ms to 17–19).

        Without the interval a behind worker's batches are only as large as what arrives while the previous one
        is in flight (about 20 actions in the benchmark), and every batch costs a fixed part on top of its
        actions: the claim's and the completion's statements and round trips, and the events' Redis round trip
        (benchmarks/RESULTS.md, "a busy worker gathers its batches" and "only a worker that is behind waits").
        """
        interval = self.settings.worker_batch_interval
        if interval <= 0 or last_size < BUSY_BATCH or not behind:
            return 0.0
        return last_at + interval

    async def _claim_and_run(self, batch: list[_Intake]) -> None:
        plain = [item.message.id for item in batch if item.message.concurrency_key is None]
        keyed = [(i.message.id, i.message.concurrency_key) for i in batch if i.message.concurrency_key is not None]
        try:
            claimed = await self.repo.claim_actions(plain, worker_id=self.worker_id, lease=self.settings.lease_seconds)
            if keyed:
                claimed += await self.repo.claim_keyed_actions(
                    keyed, worker_id=self.worker_id, lease=self.settings.lease_seconds, defer=_concurrency_wait
                )
        except StoreError as exc:
            log.warning("claim failed (%s); messages go back to the broker", exc)
            for item in batch:
                self._free.release()
                if item.envelope is not None and item.envelope.pending > 0:
                    item.envelope.pending = 0
                    await item.envelope.delivery.reject(requeue=True)
            await asyncio.sleep(min(self.settings.poll_interval, 1.0))
            return
        by_id = {c.id: c for c in claimed}
        duplicates: list[_Intake] = []
        for item in batch:
            action = by_id.pop(item.message.id, None)  # a second delivery in the same batch is a duplicate
            if action is None:
                # Already running elsewhere, finished or cancelled: a duplicate delivery. Drop it.
                self._free.release()
                duplicates.append(item)
                continue
            self._launch(action, item.envelope)
        # The handlers start while the running events travel (they are not on the submit-to-start path); the
        # events still go out before any completion of this batch, which waits for its own store round trip.
        await self.events.publish([_running_event(c) for c in claimed])
        for item in duplicates:
            await self._settle(item.envelope)

    def _launch(self, action: ClaimedAction, envelope: _Envelope | None) -> None:
        """Start a claimed action's handler under its time limits; ``_finish`` records how it ended.

        One task per attempt (the handler's own) and one timer: the limits and the outcome are callbacks, not a
        second supervising task, because per action that bookkeeping cost about as much as a no-op handler.
        """
        assert self._loop is not None
        loop = self._loop
        ctx = ActionContext(
            cache=self.user_cache,
            lock=self._lock,
            action_id=action.id,
            job_id=action.job_id,
            type_=action.type,
            attempt=action.attempt,
            max_attempts=action.max_attempts,
            timeout=action.timeout,
            worker_id=self.worker_id,
            on_progress=self._progress_reported,
        )
        attempt = _Attempt(action, ctx, envelope, loop.create_future(), time.perf_counter(), loop.time())
        self._running[action.id] = attempt
        try:
            definition = self.yard.get(action.type)
        except UnknownActionType as exc:
            log.error("unknown action type %r on worker %s: dead-lettered", action.type, self.worker_id)
            error = f"UnknownActionType: {exc} (worker {self.worker_id})"
            self._finish(attempt, self._failed_outcome(action, error), None)
            return
        # The handler's task (and a sync handler's thread) run in a context that names the action for the logs.
        context = contextvars.copy_context()
        context.run(bind_action, action.job_id, action.id)
        attempt.handler = loop.create_task(self._call(definition, ctx, action.payload), context=context)
        soft = definition.soft_timeout
        if soft is not None and soft < action.timeout:
            attempt.timer = loop.call_at(attempt.began + soft, self._soft_limit, attempt, soft)
        else:
            attempt.timer = loop.call_at(attempt.began + action.timeout, self._hard_limit, attempt)
        attempt.handler.add_done_callback(functools.partial(self._handler_done, attempt), context=context)

    def _lock(self, name: str, *, ttl: float, wait: float) -> Lock:
        return Lock(self.events.kv, self.repo, name, ttl=ttl, wait=wait)

    def _progress_reported(self, _ctx: ActionContext) -> None:
        # May be called from a sync handler's thread: hop onto the event loop.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._progress_wakeup.set)

    # --- running ------------------------------------------------------------------------------------
    def _soft_limit(self, attempt: _Attempt, soft: float) -> None:
        """The soft limit: interrupt the handler so it can clean up; the hard limit still stands."""
        assert attempt.handler is not None and self._loop is not None
        if attempt.handler.done():
            return
        attempt.ctx.soft_timed_out = True
        attempt.ctx.logger.warning("soft time limit of %gs reached: interrupting the handler", soft)
        self._interrupt(attempt, _Interrupt.SOFT_TIMEOUT)
        attempt.timer = self._loop.call_at(attempt.began + attempt.action.timeout, self._hard_limit, attempt)

    def _hard_limit(self, attempt: _Attempt) -> None:
        """The hard limit: abandon the attempt (a sync handler's thread cannot be killed; its result is ignored)."""
        assert attempt.handler is not None
        if attempt.handler.done():
            return  # it finished in this very turn: its own callback records it
        attempt.handler.cancel()
        action = attempt.action
        error = f"ActionTimeout: attempt {action.attempt} exceeded its time limit of {action.timeout:g}s"
        self._finish(attempt, self._error_outcome(action, error), None)

    def _handler_done(self, attempt: _Attempt, handler: asyncio.Future[Any]) -> None:
        if attempt.done.done():
            return  # abandoned at its hard limit: whatever it returned now is ignored
        try:
            outcome, result = self._outcome_of(attempt, handler)
        except Exception as exc:  # a bug here must not leak the slot nor leave stop() waiting for the attempt
            log.exception("recording the outcome of action %s failed", attempt.action.id)
            outcome, result = self._error_outcome(attempt.action, f"jobyard: {_describe(exc)}"), None
        self._finish(attempt, outcome, result)

    def _outcome_of(self, attempt: _Attempt, handler: asyncio.Future[Any]) -> tuple[Outcome, bytes | None]:
        action, ctx = attempt.action, attempt.ctx
        try:
            result = handler.result()
            try:
                encoded = jsonutil.dumps(result)  # once: for the check, the summary's size and the KV's copy
            except TypeError:
                return self._failed_outcome(action, "TypeError: the handler returned a value that is not JSON"), None
        except PermanentFailure as exc:
            return self._failed_outcome(action, _describe(exc)), None
        except (ActionCancelled, ActionTimeout, asyncio.CancelledError) as exc:
            return self._interrupted_outcome(action, ctx, exc), None
        except Exception as exc:
            ctx.logger.warning("attempt %d failed: %s", action.attempt, _describe(exc), exc_info=exc)
            return self._error_outcome(action, _describe(exc)), None
        summary = summarize(result, encoded, self.settings.result_summary_bytes)
        return Outcome(action.id, action.attempt, OutcomeKind.SUCCEEDED, result_summary=summary), encoded

    def _finish(self, attempt: _Attempt, outcome: Outcome, result: bytes | None) -> None:
        """The attempt is over: free its slot and hand its outcome to the completion loop."""
        # Done from here on (stop()'s waiters run later, once the outcome below is queued): late callbacks ignore it.
        attempt.done.set_result(None)
        if attempt.timer is not None:
            attempt.timer.cancel()
        action = attempt.action
        if self._running.get(action.id) is attempt:  # not a later attempt of the same action (its lease lapsed)
            del self._running[action.id]
        self._free.release()
        if self.metrics is not None:
            elapsed = time.perf_counter() - attempt.started
            labels = (action.type, outcome.kind.value)
            duration = self._durations.get(labels)
            if duration is None:  # the labelled child, looked up once per type and outcome (a lock and a hash each)
                duration = self._durations[labels] = self.metrics.action_duration.labels(*labels)
            duration.observe(elapsed)
        self._finished.put_nowait(_Finished(outcome, attempt.envelope, result, attempt.ctx, queue=action.queue))

    def _interrupt(self, attempt: _Attempt, why: _Interrupt) -> None:
        """Ask a running handler to stop: cancel its await (async) or raise in its thread (sync)."""
        handler, ctx = attempt.handler, attempt.ctx
        if handler is None or handler.done() or attempt.done.done():
            return
        if ctx.thread_id is not None:
            exc_type = ActionTimeout if why is _Interrupt.SOFT_TIMEOUT else ActionCancelled
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ctx.thread_id), ctypes.py_object(exc_type))
            if why is _Interrupt.SHUTDOWN:
                handler.cancel()  # stop waiting for the thread; its late result is ignored
        else:
            handler.cancel(msg=f"jobyard: {why.value}")

    def _interrupted_outcome(self, action: ClaimedAction, ctx: ActionContext, exc: BaseException) -> Outcome:
        if ctx.cancelled:
            return Outcome(action.id, action.attempt, OutcomeKind.CANCELLED, error="cancelled on request while running")
        if ctx.soft_timed_out:
            error = f"ActionTimeout: attempt {action.attempt} stopped at its soft time limit"
            return self._error_outcome(action, error)
        if self._stopping:
            return self._release_outcome(action)
        return self._error_outcome(action, _describe(exc) or "interrupted")

    def cancel_actions(self, action_ids: Iterable[UUID]) -> int:
        """Cancellation requested for these actions: flag their context, interrupt them after a short grace."""
        count = 0
        for action_id in action_ids:
            attempt = self._running.get(action_id)
            if attempt is None or attempt.ctx.cancelled:
                continue
            attempt.ctx.cancel()
            count += 1
            attempt.ctx.logger.info("cancellation requested; interrupting in %gs unless it stops first", CANCEL_GRACE)
            if self._loop is not None:
                self._loop.call_later(CANCEL_GRACE, self._interrupt, attempt, _Interrupt.CANCELLED)
        return count

    async def _call(self, definition: ActionDefinition, ctx: ActionContext, payload: Any) -> Any:
        if definition.is_async:
            return await definition.call(ctx, payload)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=min(self.concurrency, 64), thread_name_prefix="jobyard-sync"
            )
        loop = asyncio.get_running_loop()
        # The thread runs in a copy of this task's context, so its log records carry the action's ids too.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, definition.call_in_thread, ctx, payload)

    def _error_outcome(self, action: ClaimedAction, error: str) -> Outcome:
        if action.attempt < action.max_attempts:
            delay = retry_delay(action.attempt, self.settings.retry_base_delay, self.settings.retry_max_delay)
            return self._retry_outcome(action, error, delay)
        return self._failed_outcome(action, error)

    def _retry_outcome(self, action: ClaimedAction, error: str, delay: float) -> Outcome:
        body = messages.encode_claimed(action)
        return Outcome(
            action.id,
            action.attempt,
            OutcomeKind.RETRY,
            error=error,
            retry_in=delay,
            queue=action.queue,
            message_body=body,
        )

    def _release_outcome(self, action: ClaimedAction) -> Outcome:
        outcome = self._retry_outcome(action, f"interrupted: worker {self.worker_id} shut down", delay=0.0)
        outcome.kind = OutcomeKind.RELEASE
        return outcome

    @staticmethod
    def _failed_outcome(action: ClaimedAction, error: str) -> Outcome:
        return Outcome(action.id, action.attempt, OutcomeKind.FAILED, error=error)

    # --- completing ---------------------------------------------------------------------------------
    async def _complete_loop(self) -> None:
        batch_max = self.settings.worker_batch
        last_at, last_size = 0.0, 0  # the previous completion: when it went out, how many outcomes it held
        while True:
            behind = not self._finished.empty()  # outcomes came while the previous completion was in flight
            first = await self._finished.get()
            batch = [first]
            try:
                await self._gather_finished(batch, batch_max, self._gather_until(last_at, last_size, behind))
                last_at, last_size = time.monotonic(), len(batch)
                if self._complete_sizes is not None:
                    self._complete_sizes.observe(len(batch))
                await self._complete(batch)
            except Exception:  # never let one bad batch stop the loop (stop() waits on it): the lease reaper
                # returns whatever this batch did not record, the broker redelivers what it did not ack
                log.exception(
                    "completing %d outcomes failed; their actions come back when their leases expire", len(batch)
                )
            finally:
                for _ in batch:
                    self._finished.task_done()

    async def _gather_finished(self, batch: list[_Finished], batch_max: int, deadline: float) -> None:
        """As ``_gather_intake``, for outcomes."""
        while True:
            while len(batch) < batch_max and not self._finished.empty():
                batch.append(self._finished.get_nowait())
            if len(batch) >= batch_max or not await _gather_step(deadline):
                return

    async def _drain_finished(self, timeout: float = 30.0) -> None:
        """Wait (up to ``timeout`` seconds) until the completion loop has recorded every outcome produced so far."""
        try:
            await asyncio.wait_for(self._finished.join(), timeout)
        except TimeoutError:
            log.warning(
                "worker %s: %d outcomes not recorded after %gs (is the store down?); their actions come back "
                "when their leases expire",
                self.worker_id,
                self._finished.qsize(),
                timeout,
            )

    async def _complete(self, batch: list[_Finished]) -> None:
        delay = 0.1
        while True:
            try:
                completions = await self.repo.complete_actions([f.outcome for f in batch])
                break
            except StoreError as exc:
                # Keep the outcomes and try again: the fence makes a late write harmless if the lease lapsed.
                log.warning("recording %d outcomes failed (%s); retrying in %.1fs", len(batch), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        committed = time.time()  # the events' ts: stream latency is measured from the commit
        self.processed += len(completions)  # recorded: counted before anyone can read the job as final
        accepted = {c.action_id: c for c in completions}
        results = self.results.writes(
            [
                (f.outcome.action_id, f.result)
                for f in batch
                if f.result is not None and f.outcome.kind is OutcomeKind.SUCCEEDED and f.outcome.action_id in accepted
            ]
        )
        # Results, cache invalidation and events in one round trip; the results are set before the events say so.
        await self.events.publish(
            [_event(c, f, committed) for f in batch if (c := accepted.get(f.outcome.action_id))], also=results
        )
        for finished in batch:
            await self._settle(finished.envelope)

    # --- leases and progress ------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            held = [(r.action.id, r.action.attempt) for r in self._running.values()]
            if not held:
                continue
            try:
                kept = await self.repo.extend_leases(held, self.settings.lease_seconds)
            except StoreError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            for action_id, _attempt in held:
                if action_id not in kept and action_id in self._running:
                    ctx = self._running[action_id].ctx
                    if not ctx.lease_lost:
                        ctx.lease_lost = True
                        ctx.logger.warning("lease lost: another worker may run this action; our result will be refused")
            try:
                self.cancel_actions(await self.repo.cancelled_among([a for a, _ in held]))
            except StoreError as exc:
                log.debug("cancellation check failed: %s", exc)

    async def _control_loop(self) -> None:
        """Instructions pushed to every worker over the KV's pub/sub (cancel these actions)."""
        while True:
            try:
                async for _channel, raw in self.events.kv.subscribe(keys.control_channel()):
                    message = jsonutil.loads(raw)
                    if message.get("type") == "cancel":
                        self.cancel_actions(UUID(i) for i in message.get("action_ids", []))
            except KVError as exc:
                log.debug("control channel unavailable (%s); the heartbeat checks the store instead", exc)
                await asyncio.sleep(2.0)

    async def _presence_loop(self) -> None:
        while True:
            await self._presence.beat()
            raise_if_cancelling()
            await asyncio.sleep(self._presence.interval)

    def _describe(self) -> dict[str, Any]:
        """What this worker is doing, for its presence heartbeat (the dashboard's workers page)."""
        running = [
            {"action_id": str(r.action.id), "job_id": str(r.action.job_id), "type": r.action.type,
             "attempt": r.action.attempt, "progress": r.ctx.progress_fraction}
            for r in list(self._running.values())[:50]
        ]  # fmt: skip
        return {
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running_count": len(self._running),
            "running": running,
            "processed": self.processed,
        }

    async def _progress_loop(self) -> None:
        while True:
            await self._progress_wakeup.wait()
            self._progress_wakeup.clear()
            updates = []
            for attempt in list(self._running.values()):
                taken = attempt.ctx.take_progress()
                if taken is not None:
                    updates.append((attempt.action, *taken))
            for action, fraction, message in updates:
                try:
                    await self.repo.update_progress(action.id, action.attempt, fraction, message)
                except StoreError as exc:
                    log.debug("progress not recorded: %s", exc)
            await self.events.publish(
                [
                    {
                        "type": "action.progress",
                        "job_id": str(a.job_id),
                        "action_id": str(a.id),
                        "progress": fraction,
                        "message": message,
                    }
                    for a, fraction, message in updates
                ]
            )
            await asyncio.sleep(0.25)  # coalesce: at most four progress writes per second per worker

    # --- fallback: claim from the store while the broker is down ------------------------------------
    async def _poll_loop(self) -> None:
        """Claim from the store: everything due while the broker is down; while it is up, only the overdue.

        The sweep covers messages that are late for any reason (parked at a stalled consumer, lost): the store
        is the source of truth, the broker only the fast path. A late copy then fails its claim and is dropped.
        """
        loop = asyncio.get_running_loop()
        sweep_every = max(self.settings.poll_interval, self.settings.sweep_after / 4)
        next_sweep = loop.time() + sweep_every
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            if self._stopping:
                continue
            if self.broker.connected:
                if loop.time() < next_sweep:
                    continue
                next_sweep = loop.time() + sweep_every
                due_for = self.settings.sweep_after
            else:
                due_for = 0.0
            free = self.concurrency - len(self._running)
            if free <= 0:
                continue
            try:
                async with self._claim_lock:
                    if self._stopping:
                        continue
                    claimed = await self.repo.claim_due_actions(
                        self.queues,
                        limit=free,
                        worker_id=self.worker_id,
                        lease=self.settings.lease_seconds,
                        due_for=due_for,
                    )
                    keyed = await self.repo.due_keyed_actions(self.queues, limit=free, due_for=due_for)
                    claimed += await self.repo.claim_keyed_actions(
                        keyed[: max(0, free - len(claimed))],
                        worker_id=self.worker_id,
                        lease=self.settings.lease_seconds,
                        defer=_concurrency_wait,
                    )
                    if claimed and self._claim_sizes is not None:
                        self._claim_sizes.observe(len(claimed))
                    for action in claimed:
                        await self._free.acquire()
                        self._launch(action, None)
            except StoreError as exc:
                log.warning("store poll failed: %s", exc)
                continue
            await self.events.publish([_running_event(c) for c in claimed])
            if claimed:
                why = "their messages are overdue" if due_for else "the broker is unreachable"
                log.info("claimed %d actions straight from the store: %s", len(claimed), why)


def _concurrency_wait() -> float:
    """How long an action whose concurrency key is full waits before it is offered again (jittered)."""
    return random.uniform(0.1, 0.5)


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:4000]


def _running_event(action: ClaimedAction) -> dict[str, Any]:
    return {
        "type": "action.status",
        "job_id": str(action.job_id),
        "action_id": str(action.id),
        "status": "running",
        "attempt": action.attempt,
        "queue": action.queue,
    }


def _event(completion: Completion, finished: _Finished, committed: float) -> dict[str, Any]:
    event: dict[str, Any] = {
        "ts": committed,
        "queue": finished.queue,
        "type": "action.status",
        "job_id": str(completion.job_id),
        "action_id": str(completion.action_id),
        "status": completion.status.value,
        "attempt": finished.outcome.attempt,
    }
    if finished.outcome.error:
        event["error"] = finished.outcome.error
    if completion.job_status is not None:
        event["job_status"] = completion.job_status.value
        event["job_finished"] = completion.job_finished
    return event
