"""Jobs and actions: statuses, allowed transitions, consolidation and backoff (pure, no I/O).

The store applies these rules in SQL; this module is their one written definition and what tests check.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_JOB


class ActionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_ACTION_STATUSES


_FINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
FINAL_ACTION_STATUSES = frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED})
CLAIMABLE_ACTION_STATUSES = frozenset({ActionStatus.QUEUED, ActionStatus.RETRYING})
_ACTION_STATUS_VALUES = tuple(status.value for status in ActionStatus)
_FINAL_ACTION_VALUES = frozenset(status.value for status in FINAL_ACTION_STATUSES)
_RUNNING_VALUE = ActionStatus.RUNNING.value

ACTION_TRANSITIONS: dict[ActionStatus, frozenset[ActionStatus]] = {
    ActionStatus.QUEUED: frozenset({ActionStatus.RUNNING, ActionStatus.CANCELLED, ActionStatus.FAILED}),
    ActionStatus.RUNNING: frozenset(
        {
            ActionStatus.SUCCEEDED,
            ActionStatus.RETRYING,
            ActionStatus.FAILED,
            ActionStatus.CANCELLED,
            ActionStatus.QUEUED,  # lease expired: the reaper hands it back
            ActionStatus.RUNNING,  # lease expired and claimed again by another worker
        }
    ),
    ActionStatus.RETRYING: frozenset({ActionStatus.RUNNING, ActionStatus.CANCELLED, ActionStatus.FAILED}),
    ActionStatus.SUCCEEDED: frozenset(),
    ActionStatus.FAILED: frozenset({ActionStatus.QUEUED}),  # replay or manual retry
    ActionStatus.CANCELLED: frozenset(),
}


def can_transition(old: ActionStatus, new: ActionStatus) -> bool:
    return new in ACTION_TRANSITIONS[old]


def consolidate(total: int, succeeded: int, failed: int, cancelled: int, started: bool) -> JobStatus:
    """A job's status from its action counters.

    The job is final once every action is final: ``failed`` if any action failed for good, else ``cancelled``
    if any was cancelled, else ``succeeded``. Before that it is ``running`` once any action was claimed.
    """
    if succeeded + failed + cancelled >= total:
        if failed:
            return JobStatus.FAILED
        if cancelled:
            return JobStatus.CANCELLED
        return JobStatus.SUCCEEDED
    return JobStatus.RUNNING if started else JobStatus.PENDING


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^(attempt-1))].

    Full jitter spreads a burst of failures (a device that went offline for 500 actions) over the window
    instead of retrying them in lockstep.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0, ceiling) if ceiling > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    total: int
    queued: int
    running: int
    retrying: int
    succeeded: int
    failed: int
    cancelled: int
    percent: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "queued": self.queued,
            "running": self.running,
            "retrying": self.retrying,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "percent": self.percent,
        }


def job_progress(actions: list[tuple[str, float]]) -> Progress:
    """Counts by status and overall percent from (status, progress fraction) pairs.

    A final action counts as 100 %; a running one as its reported fraction; others as 0. Every status read of a job
    recomputes this over its actions, so it counts by the statuses' text (a dict lookup each) rather than turning
    each into an ``ActionStatus`` first (13.9 µs for ten actions against 6.6 µs).
    """
    counts = dict.fromkeys(_ACTION_STATUS_VALUES, 0)
    done = 0.0
    for status, fraction in actions:
        if status not in counts:
            raise ValueError(f"{status!r} is not an action status")
        counts[status] += 1
        if status in _FINAL_ACTION_VALUES:
            done += 1.0
        elif status == _RUNNING_VALUE:
            done += min(1.0, max(0.0, fraction or 0.0))
    total = len(actions)
    percent = round(100.0 * done / total, 1) if total else 100.0
    return Progress(
        total=total,
        queued=counts[ActionStatus.QUEUED],
        running=counts[ActionStatus.RUNNING],
        retrying=counts[ActionStatus.RETRYING],
        succeeded=counts[ActionStatus.SUCCEEDED],
        failed=counts[ActionStatus.FAILED],
        cancelled=counts[ActionStatus.CANCELLED],
        percent=percent,
    )


@dataclass(slots=True)
class ActionSpecIn:
    """One action of a submission, after validation and defaults."""

    type: str
    queue: str
    payload: Any
    max_attempts: int
    timeout: float
    concurrency_key: str | None = None
    concurrency_limit: int = 1


@dataclass(slots=True)
class JobRecord:
    id: UUID
    tenant_id: str
    name: str | None
    metadata: dict[str, Any]
    status: JobStatus
    total: int
    succeeded: int
    failed: int
    cancelled: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(slots=True)
class ActionRecord:
    id: UUID
    job_id: UUID
    seq: int
    type: str
    queue: str
    status: ActionStatus
    attempt: int
    max_attempts: int
    timeout: float
    progress: float
    progress_message: str | None
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    payload: Any = None


@dataclass(slots=True)
class ClaimedAction:
    """An action a worker now holds: ``attempt`` is also the fencing token for every write of this attempt."""

    id: UUID
    job_id: UUID
    type: str
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    timeout: float
    concurrency_key: str | None = None
    concurrency_limit: int = 1


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASE = "release"  # handed back unfinished (worker shutting down): queued again, the attempt not counted


@dataclass(slots=True)
class Outcome:
    """What one attempt produced; written by ``Repository.complete_actions`` fenced on ``attempt``."""

    action_id: UUID
    attempt: int
    kind: OutcomeKind
    result_summary: Any = None
    error: str | None = None
    retry_in: float = 0.0
    queue: str = ""
    message_body: bytes | None = None


@dataclass(slots=True)
class Completion:
    """An outcome the store accepted, with the job it changed (for events, results and cache invalidation)."""

    action_id: UUID
    job_id: UUID
    status: ActionStatus
    job_status: JobStatus | None = None
    job_finished: bool = False


@dataclass(slots=True)
class JobCreated:
    job: JobRecord
    action_ids: list[UUID] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: never the key itself, only its SHA-256 (``key_hash``) and its public ``prefix``."""

    id: UUID
    tenant_id: str
    name: str | None
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log to write: who (``actor``, ``actor_key_id``) did ``action`` to ``target``."""

    tenant_id: str
    action: str
    actor: str
    actor_key_id: UUID | None = None
    target: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    tenant_id: str
    at: datetime
    actor_key_id: UUID | None
    actor: str
    action: str
    target: str | None
    details: dict[str, Any] | None
