"""Every SQL statement jobyard runs, named. The repository is their only caller.

Bound parameters are prefixed ``p_`` so they never clash with column names in ``UPDATE … SET``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from jobyard.model import ActionStatus, JobStatus
from jobyard.store.dbtime import db_now, db_now_plus
from jobyard.store.tables import (
    actions,
    api_keys,
    audit,
    dedup,
    events,
    jobs,
    locks,
    outbox,
    schedule_fires,
    schedules,
    webhook_deliveries,
    webhooks,
)

A, J, OB, K, AU = actions.c, jobs.c, outbox.c, api_keys.c, audit.c
EV, S, SF, W, WD = events.c, schedules.c, schedule_fires.c, webhooks.c, webhook_deliveries.c
_CLAIMABLE = [ActionStatus.QUEUED.value, ActionStatus.RETRYING.value]
_RUNNING = ActionStatus.RUNNING.value

# --- submit -------------------------------------------------------------------------------------------
INSERT_JOB = insert(jobs)
INSERT_ACTIONS = insert(actions)
INSERT_OUTBOX = insert(outbox)
# A new job's rows, due after ``p_hold`` seconds (0: at once; see ``Repository.create_job``'s handoff)
INSERT_HELD_OUTBOX = insert(outbox).values(available_at=db_now_plus(bindparam("p_hold"))).returning(outbox.c.id)

# --- deduplication (the unique primary key (tenant_id, key) is what enforces it) ----------------------------
DELETE_EXPIRED_DEDUP_KEY = delete(dedup).where(
    dedup.c.tenant_id == bindparam("p_tenant"), dedup.c.key == bindparam("p_key"), dedup.c.expires_at < db_now()
)
SELECT_DEDUP = select(dedup.c.job_id, dedup.c.request_hash).where(
    dedup.c.tenant_id == bindparam("p_tenant"), dedup.c.key == bindparam("p_key")
)
_EXPIRED_DEDUP = select(dedup.c.tenant_id, dedup.c.key).where(dedup.c.expires_at < db_now()).limit(1000)
PRUNE_EXPIRED_DEDUP = delete(dedup).where(tuple_(dedup.c.tenant_id, dedup.c.key).in_(_EXPIRED_DEDUP))


def insert_dedup_unless_taken(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING key: a row back means this submission owns the key."""
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if dialect == "postgresql" else sqlite
    return (
        module.insert(dedup)
        .values(
            tenant_id=bindparam("p_tenant"),
            key=bindparam("p_key"),
            job_id=bindparam("p_job_id"),
            request_hash=bindparam("p_hash"),
            expires_at=db_now_plus(bindparam("p_ttl")),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(dedup.c.key)
    )


# --- locks: the fence always comes from here; the row is also the lock itself when Redis is down ---------
def take_lock(dialect: str) -> Any:
    """Take the named lock if free or expired: a row back (with the new fence) means we hold it."""
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(locks).values(
        name=bindparam("p_name"), holder=bindparam("p_holder"), expires_at=db_now_plus(bindparam("p_ttl")), fence=1
    )
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at, "fence": locks.c.fence + 1},
        where=or_(locks.c.holder.is_(None), locks.c.expires_at < db_now()),
    ).returning(locks.c.fence)


def next_fence(dialect: str) -> Any:
    """Only the next fencing token for a name (the lock itself is held in Redis)."""
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(locks).values(name=bindparam("p_name"), fence=1)
    return stmt.on_conflict_do_update(index_elements=["name"], set_={"fence": locks.c.fence + 1}).returning(
        locks.c.fence
    )


EXTEND_LOCK = (
    update(locks)
    .where(locks.c.name == bindparam("p_name"), locks.c.holder == bindparam("p_holder"), locks.c.expires_at > db_now())
    .values(expires_at=db_now_plus(bindparam("p_ttl")))
    .returning(locks.c.name)
)
RELEASE_LOCK = (
    update(locks)
    .where(locks.c.name == bindparam("p_name"), locks.c.holder == bindparam("p_holder"))
    .values(holder=None, expires_at=None)
)


# --- relay --------------------------------------------------------------------------------------------
SELECT_DUE_OUTBOX = (
    select(OB.id, OB.queue, OB.body)
    .where(OB.available_at <= db_now())
    .order_by(OB.available_at, OB.id)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
DELETE_OUTBOX = delete(outbox).where(OB.id.in_(bindparam("p_ids", expanding=True)))
NEXT_OUTBOX_DUE = select(func.min(OB.available_at))
COUNT_OUTBOX = select(func.count()).select_from(outbox)

# --- claims -------------------------------------------------------------------------------------------
_CLAIM_VALUES = {
    "status": _RUNNING,
    "attempt": A.attempt + 1,
    "lease_expires_at": db_now_plus(bindparam("p_lease")),
    "started_at": db_now(),
    "finished_at": None,
    "worker_id": bindparam("p_worker"),
    "progress": 0.0,
    "progress_message": None,
    "updated_at": db_now(),
}
_CLAIM_RETURNING = (
    A.id, A.job_id, A.type, A.queue, A.payload, A.attempt, A.max_attempts, A.timeout,
    A.concurrency_key, A.concurrency_limit,
)  # fmt: skip

CLAIM_ACTIONS = (
    update(actions)
    .where(
        A.id.in_(bindparam("p_ids", expanding=True)),
        A.status.in_(_CLAIMABLE),
        A.available_at <= db_now(),
    )
    .values(**_CLAIM_VALUES)
    .returning(*_CLAIM_RETURNING)
)

_DUE_IDS = (
    select(A.id)
    .where(
        A.queue.in_(bindparam("p_queues", expanding=True)),
        A.status.in_(_CLAIMABLE),
        A.concurrency_key.is_(None),  # keyed actions go through CLAIM_KEYED_ACTION
        A.available_at <= db_now_plus(bindparam("p_offset")),  # p_offset ≤ 0: due for at least that long
    )
    .order_by(A.available_at)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
CLAIM_DUE_ACTIONS = (
    update(actions)
    .where(A.id.in_(_DUE_IDS), A.status.in_(_CLAIMABLE))
    .values(**_CLAIM_VALUES)
    .returning(*_CLAIM_RETURNING)
)

# Concurrency keys: claim one keyed action only while fewer than its limit with the same key are running.
# The caller serialises claims per key (an advisory lock on PostgreSQL; SQLite has a single writer).
_SAME_KEY = actions.alias("same_key")
_RUNNING_WITH_SAME_KEY = (
    select(func.count())
    .select_from(_SAME_KEY)
    .where(_SAME_KEY.c.concurrency_key == A.concurrency_key, _SAME_KEY.c.status == _RUNNING)
    .scalar_subquery()
)
CLAIM_KEYED_ACTION = (
    update(actions)
    .where(
        A.id == bindparam("p_id"),
        A.status.in_(_CLAIMABLE),
        A.available_at <= db_now(),
        A.concurrency_limit > _RUNNING_WITH_SAME_KEY,
    )
    .values(**_CLAIM_VALUES)
    .returning(*_CLAIM_RETURNING)
)
LOCK_CONCURRENCY_KEY = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("p_key"), 0)))
DEFER_ACTION = (
    update(actions)
    .where(A.id == bindparam("p_id"), A.status.in_(_CLAIMABLE), A.available_at <= db_now())
    .values(available_at=db_now_plus(bindparam("p_delay")), updated_at=db_now())
    .returning(*_CLAIM_RETURNING, A.available_at)
)
SELECT_DUE_KEYED_IDS = (
    select(A.id, A.concurrency_key)
    .where(
        A.queue.in_(bindparam("p_queues", expanding=True)),
        A.status.in_(_CLAIMABLE),
        A.concurrency_key.is_not(None),
        A.available_at <= db_now_plus(bindparam("p_offset")),
    )
    .order_by(A.available_at)
    .limit(bindparam("p_limit"))
)

MARK_JOBS_RUNNING = (
    update(jobs)
    .where(J.id.in_(bindparam("p_ids", expanding=True)), J.status == JobStatus.PENDING.value)
    .values(status=JobStatus.RUNNING.value, started_at=db_now(), updated_at=db_now())
)

# --- while running ------------------------------------------------------------------------------------
_FENCE = and_(A.id == bindparam("p_id"), A.attempt == bindparam("p_attempt"), A.status == _RUNNING)

EXTEND_LEASE = (
    update(actions)
    .where(_FENCE)
    .values(lease_expires_at=db_now_plus(bindparam("p_lease")), updated_at=db_now())
    .returning(A.id)
)
UPDATE_PROGRESS = (
    update(actions)
    .where(_FENCE)
    .values(progress=bindparam("p_progress"), progress_message=bindparam("p_message"), updated_at=db_now())
    .returning(A.job_id)
)

# --- completion (fenced on the attempt: a stale worker's write matches no row) --------------------------
COMPLETE_SUCCEEDED = (
    update(actions)
    .where(_FENCE)
    .values(
        status=ActionStatus.SUCCEEDED.value,
        result=bindparam("p_result"),
        error=None,
        progress=1.0,
        lease_expires_at=None,
        finished_at=db_now(),
        updated_at=db_now(),
    )
    .returning(A.job_id)
)
COMPLETE_RETRY = (
    update(actions)
    .where(_FENCE)
    .values(
        status=ActionStatus.RETRYING.value,
        error=bindparam("p_error"),
        lease_expires_at=None,
        available_at=db_now_plus(bindparam("p_delay")),
        updated_at=db_now(),
    )
    .returning(A.job_id, A.available_at)
)
COMPLETE_FAILED = (
    update(actions)
    .where(_FENCE)
    .values(
        status=ActionStatus.FAILED.value,
        error=bindparam("p_error"),
        lease_expires_at=None,
        finished_at=db_now(),
        updated_at=db_now(),
    )
    .returning(A.job_id, A.type)
)
COMPLETE_CANCELLED = (
    update(actions)
    .where(_FENCE)
    .values(
        status=ActionStatus.CANCELLED.value,
        error=bindparam("p_error"),
        lease_expires_at=None,
        finished_at=db_now(),
        updated_at=db_now(),
    )
    .returning(A.job_id)
)
COMPLETE_RELEASE = (
    update(actions)
    .where(_FENCE)
    .values(
        status=ActionStatus.QUEUED.value,
        error=bindparam("p_error"),
        # The interrupted attempt does not count against the budget; the attempt number (the fence) stays monotonic.
        max_attempts=A.max_attempts + 1,
        lease_expires_at=None,
        available_at=db_now_plus(bindparam("p_delay")),
        updated_at=db_now(),
    )
    .returning(A.job_id, A.available_at)
)
INSERT_RETRY_OUTBOX = insert(outbox).values(
    action_id=bindparam("p_id"),
    queue=bindparam("p_queue"),
    body=bindparam("p_body"),
    available_at=bindparam("p_available_at"),
)

_NEW_S = J.succeeded + bindparam("p_succeeded")
_NEW_F = J.failed + bindparam("p_failed")
_NEW_C = J.cancelled + bindparam("p_cancelled")
_ALL_DONE = J.total <= _NEW_S + _NEW_F + _NEW_C
ADD_TO_JOB_COUNTERS = (
    update(jobs)
    .where(J.id == bindparam("p_job_id"))
    .values(
        succeeded=_NEW_S,
        failed=_NEW_F,
        cancelled=_NEW_C,
        status=case(
            (J.status == JobStatus.CANCELLED.value, literal(JobStatus.CANCELLED.value)),  # cancelled stays cancelled
            (
                _ALL_DONE,
                case(
                    (_NEW_F > 0, literal(JobStatus.FAILED.value)),
                    (_NEW_C > 0, literal(JobStatus.CANCELLED.value)),
                    else_=literal(JobStatus.SUCCEEDED.value),
                ),
            ),
            (J.status == JobStatus.PENDING.value, literal(JobStatus.RUNNING.value)),
            else_=J.status,
        ),
        finished_at=case((_ALL_DONE, db_now()), else_=J.finished_at),
        # A job that finishes before the job.ready sweep saw it is ready too (its events stay in order).
        ready_at=case((and_(J.ready_at.is_(None), _ALL_DONE), db_now()), else_=J.ready_at),
        updated_at=db_now(),
    )
    .returning(J.tenant_id, J.status, J.total, J.succeeded, J.failed, J.cancelled)
)
SELECT_UNREADY_JOBS = (
    select(J.id).where(J.id.in_(bindparam("p_ids", expanding=True)), J.ready_at.is_(None)).with_for_update()
)

# --- cancellation, retry and replay ------------------------------------------------------------------
_OPEN_JOB = [JobStatus.PENDING.value, JobStatus.RUNNING.value]

CANCEL_JOB = (
    update(jobs)
    .where(J.id == bindparam("p_id"), J.tenant_id == bindparam("p_tenant"), J.status.in_(_OPEN_JOB))
    .values(status=JobStatus.CANCELLED.value, updated_at=db_now())
    .returning(J.id)
)
CANCEL_WAITING_ACTIONS = (
    update(actions)
    .where(A.job_id == bindparam("p_id"), A.status.in_(_CLAIMABLE))
    .values(
        status=ActionStatus.CANCELLED.value,
        error="cancelled on request before it ran",
        lease_expires_at=None,
        finished_at=db_now(),
        updated_at=db_now(),
    )
    .returning(A.id)
)
SELECT_RUNNING_ACTION_IDS = select(A.id).where(A.job_id == bindparam("p_id"), A.status == _RUNNING)
DELETE_OUTBOX_FOR_ACTIONS = delete(outbox).where(OB.action_id.in_(bindparam("p_ids", expanding=True)))
SELECT_CANCELLED_AMONG = (
    select(A.id)
    .select_from(actions.join(jobs, J.id == A.job_id))
    .where(A.id.in_(bindparam("p_ids", expanding=True)), J.status == JobStatus.CANCELLED.value)
)

REQUEUE_FAILED_ACTION = (
    update(actions)
    .where(
        A.id == bindparam("p_id"),
        A.status == ActionStatus.FAILED.value,
        A.job_id.in_(select(J.id).where(J.tenant_id == bindparam("p_tenant"), J.status != JobStatus.CANCELLED.value)),
    )
    .values(
        status=ActionStatus.QUEUED.value,
        max_attempts=A.attempt + bindparam("p_extra_attempts"),
        error=None,
        finished_at=None,
        available_at=db_now(),
        updated_at=db_now(),
    )
    .returning(*_CLAIM_RETURNING)
)
REOPEN_JOB = (
    update(jobs)
    .where(J.id == bindparam("p_job_id"))
    .values(failed=J.failed - 1, status=JobStatus.RUNNING.value, finished_at=None, updated_at=db_now())
)
SELECT_ACTION_STATE = (
    select(A.status, J.status.label("job_status"))
    .select_from(actions.join(jobs, J.id == A.job_id))
    .where(A.id == bindparam("p_id"), J.tenant_id == bindparam("p_tenant"))
)

# --- lease reaper -------------------------------------------------------------------------------------
SELECT_EXPIRED_LEASES = (
    select(*_CLAIM_RETURNING)
    .where(A.status == _RUNNING, A.lease_expires_at < db_now())
    .order_by(A.lease_expires_at)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)

# --- reads --------------------------------------------------------------------------------------------
_JOB_COLUMNS = (
    J.id, J.tenant_id, J.name, J.metadata, J.status, J.total, J.succeeded, J.failed, J.cancelled,
    J.created_at, J.started_at, J.finished_at,
)  # fmt: skip
_ACTION_COLUMNS = (
    A.id, A.job_id, A.seq, A.type, A.queue, A.status, A.attempt, A.max_attempts, A.timeout, A.progress,
    A.progress_message, A.result, A.error, A.created_at, A.started_at, A.finished_at,
)  # fmt: skip

SELECT_JOB = select(*_JOB_COLUMNS).where(J.id == bindparam("p_id"), J.tenant_id == bindparam("p_tenant"))
SELECT_JOB_ACTIONS = select(*_ACTION_COLUMNS).where(A.job_id == bindparam("p_id")).order_by(A.seq)


def list_jobs(*, with_status: bool, with_cursor: bool, with_name: bool = False) -> Select[Any]:
    """Keyset page of a tenant's jobs, newest first (ids are time-ordered); optionally names containing a text."""
    stmt = select(*_JOB_COLUMNS).where(J.tenant_id == bindparam("p_tenant"))
    if with_status:
        stmt = stmt.where(J.status == bindparam("p_status"))
    if with_name:
        stmt = stmt.where(J.name.ilike(bindparam("p_name_like")))
    if with_cursor:
        stmt = stmt.where(J.id < bindparam("p_before"))
    return stmt.order_by(J.id.desc()).limit(bindparam("p_limit"))


# --- live status: what changed since a stream's cursor, and whose job an event is about -------------------
SELECT_ACTIONS_CHANGED_SINCE = (
    select(*_ACTION_COLUMNS, A.updated_at)
    .where(A.job_id == bindparam("p_id"), A.updated_at >= bindparam("p_since"))
    .order_by(A.updated_at, A.seq)
)
SELECT_JOB_TENANTS = select(J.id, J.tenant_id).where(J.id.in_(bindparam("p_ids", expanding=True)))
COUNT_JOBS_BY_STATUS = (
    select(J.status, func.count().label("n")).where(J.tenant_id == bindparam("p_tenant")).group_by(J.status)
)

SELECT_ACTION = (
    select(*_ACTION_COLUMNS, A.payload)
    .select_from(actions.join(jobs, J.id == A.job_id))
    .where(A.id == bindparam("p_id"), J.tenant_id == bindparam("p_tenant"))
)


def list_dead_letters(*, with_queue: bool, with_type: bool, with_cursor: bool) -> Select[Any]:
    stmt = (
        select(*_ACTION_COLUMNS, A.payload)
        .select_from(actions.join(jobs, J.id == A.job_id))
        .where(A.status == ActionStatus.FAILED.value, J.tenant_id == bindparam("p_tenant"))
    )
    if with_queue:
        stmt = stmt.where(A.queue == bindparam("p_queue"))
    if with_type:
        stmt = stmt.where(A.type == bindparam("p_type"))
    if with_cursor:
        stmt = stmt.where(A.id < bindparam("p_before"))
    return stmt.order_by(A.id.desc()).limit(bindparam("p_limit"))


# --- domain events (an outbox of their own, published by the leading relay) ---------------------------
INSERT_EVENTS = insert(events)
SELECT_EVENTS = (
    select(EV.id, EV.event_id, EV.type, EV.tenant_id, EV.job_id, EV.action_id, EV.data, EV.created_at)
    .order_by(EV.id)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
DELETE_EVENTS = delete(events).where(EV.id.in_(bindparam("p_ids", expanding=True)))
EVENTS_BACKLOG = select(func.count(), func.min(EV.created_at)).select_from(events)
OUTBOX_BACKLOG = select(func.count(), func.min(OB.available_at)).where(OB.available_at <= db_now())

# job.ready: jobs none of whose actions still waits for its first message to leave the outbox.
_FIRST_MESSAGE_WAITING = exists(
    select(literal(1)).select_from(outbox.join(actions, A.id == OB.action_id)).where(A.job_id == J.id, A.attempt == 0)
)
# The sweep locks the jobs it marks, skipping any another writer holds: it must never wait for a job row. It used to
# wait, in MARK_JOBS_READY, for rows it met in whatever order the plan gave, while a completion held some of them
# and waited (in id order) for others: a deadlock, which PostgreSQL breaks only after deadlock_timeout (1 s), the
# workers' completions stalled meanwhile. A job skipped now is ready at the next sweep, or when it finishes.
SELECT_NEWLY_READY_JOBS = (
    select(J.id)
    .where(J.ready_at.is_(None), ~_FIRST_MESSAGE_WAITING)
    .order_by(J.id)
    .limit(bindparam("p_limit"))
    .with_for_update(key_share=True, skip_locked=True)
)
MARK_JOBS_READY = (
    update(jobs)
    .where(J.id.in_(bindparam("p_ids", expanding=True)), J.ready_at.is_(None))
    .values(ready_at=db_now())
    .returning(J.id, J.tenant_id, J.status, J.total)
)

# --- schedules --------------------------------------------------------------------------------------
_SCHEDULE_COLUMNS = (
    S.id, S.tenant_id, S.name, S.cron, S.interval_seconds, S.timezone, S.job, S.missed, S.paused, S.next_fire_at,
    S.last_fired_at, S.last_job_id, S.last_error, S.created_at, S.updated_at,
)  # fmt: skip
INSERT_SCHEDULE = insert(schedules).returning(*_SCHEDULE_COLUMNS)
SELECT_SCHEDULE = select(*_SCHEDULE_COLUMNS).where(S.id == bindparam("p_id"), S.tenant_id == bindparam("p_tenant"))
LIST_SCHEDULES = (
    select(*_SCHEDULE_COLUMNS).where(S.tenant_id == bindparam("p_tenant")).order_by(S.id).limit(bindparam("p_limit"))
)
SET_SCHEDULE_PAUSED = (
    update(schedules)
    .where(S.id == bindparam("p_id"), S.tenant_id == bindparam("p_tenant"))
    .values(paused=bindparam("p_paused"), next_fire_at=bindparam("p_next"), updated_at=db_now())
    .returning(*_SCHEDULE_COLUMNS)
)
DELETE_SCHEDULE = (
    delete(schedules).where(S.id == bindparam("p_id"), S.tenant_id == bindparam("p_tenant")).returning(S.id)
)
SELECT_DUE_SCHEDULES = (
    select(*_SCHEDULE_COLUMNS)
    .where(S.paused.is_(False), S.next_fire_at <= db_now())
    .order_by(S.next_fire_at)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
NEXT_SCHEDULE_DUE = select(func.min(S.next_fire_at)).where(S.paused.is_(False))
# Moves on only from the fire time it was read at: a second leader that read the same row changes nothing.
ADVANCE_SCHEDULE = (
    update(schedules)
    .where(S.id == bindparam("p_id"), S.next_fire_at == bindparam("p_expected"))
    .values(
        next_fire_at=bindparam("p_next"),
        last_fired_at=bindparam("p_fired_at"),
        last_job_id=bindparam("p_job_id"),
        last_error=bindparam("p_error"),
        updated_at=db_now(),
    )
)
LIST_SCHEDULE_FIRES = (
    select(SF.fire_time, SF.job_id, SF.error, SF.fired_at)
    .where(SF.schedule_id == bindparam("p_id"))
    .order_by(SF.fire_time.desc())
    .limit(bindparam("p_limit"))
)


def insert_fire_unless_taken(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: a row back means this process fires (schedule, fire time)."""
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if dialect == "postgresql" else sqlite
    return (
        module.insert(schedule_fires)
        .values(
            schedule_id=bindparam("p_id"),
            fire_time=bindparam("p_fire_time"),
            job_id=bindparam("p_job_id"),
            error=bindparam("p_error"),
            fired_at=db_now(),
        )
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        .returning(schedule_fires.c.schedule_id)
    )


# --- webhooks ---------------------------------------------------------------------------------------
_WEBHOOK_COLUMNS = (W.id, W.tenant_id, W.url, W.events, W.description, W.active, W.created_at)
INSERT_WEBHOOK = insert(webhooks).returning(*_WEBHOOK_COLUMNS)
SELECT_WEBHOOK = select(*_WEBHOOK_COLUMNS).where(W.id == bindparam("p_id"), W.tenant_id == bindparam("p_tenant"))
LIST_WEBHOOKS = select(*_WEBHOOK_COLUMNS).where(W.tenant_id == bindparam("p_tenant")).order_by(W.id)
DELETE_WEBHOOK = delete(webhooks).where(W.id == bindparam("p_id"), W.tenant_id == bindparam("p_tenant")).returning(W.id)
# Deleting an endpoint ends its pending deliveries, in the delete's transaction: nothing is sent to it afterwards.
END_DELETED_WEBHOOK_DELIVERIES = (
    update(webhook_deliveries)
    .where(WD.webhook_id == bindparam("p_id"), WD.status == "pending")
    .values(status="failed", last_error="the webhook endpoint was deleted", updated_at=db_now())
)
SET_WEBHOOK_ACTIVE = (
    update(webhooks)
    .where(W.id == bindparam("p_id"), W.tenant_id == bindparam("p_tenant"))
    .values(active=bindparam("p_active"))
    .returning(*_WEBHOOK_COLUMNS)
)
SELECT_SUBSCRIBED_WEBHOOKS = select(W.id, W.tenant_id, W.url, W.events).where(
    W.active.is_(True), W.tenant_id.in_(bindparam("p_tenants", expanding=True))
)
SELECT_JOB_WEBHOOK_URLS = select(J.id, J.webhook_url).where(
    J.id.in_(bindparam("p_ids", expanding=True)), J.webhook_url.is_not(None)
)
INSERT_DELIVERIES = insert(webhook_deliveries)
_DELIVERY_COLUMNS = (
    WD.id, WD.tenant_id, WD.webhook_id, WD.event_id, WD.event_type, WD.job_id, WD.url, WD.status, WD.attempts,
    WD.next_attempt_at, WD.response_code, WD.last_error, WD.created_at, WD.updated_at,
)  # fmt: skip
# A tenant endpoint's deliveries wait while it is disabled (a job's own webhook_url has no endpoint row).
_DUE_DELIVERY_IDS = (
    select(WD.id)
    .where(
        WD.status == "pending",
        WD.next_attempt_at <= db_now(),
        or_(WD.webhook_id.is_(None), WD.webhook_id.in_(select(W.id).where(W.active.is_(True)))),
    )
    .order_by(WD.next_attempt_at)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
# Claiming a delivery leases it (its due time moves ahead) so a leader change does not send it twice at once.
CLAIM_DUE_DELIVERIES = (
    update(webhook_deliveries)
    .where(WD.id.in_(_DUE_DELIVERY_IDS), WD.status == "pending")
    .values(attempts=WD.attempts + 1, next_attempt_at=db_now_plus(bindparam("p_lease")), updated_at=db_now())
    .returning(WD.id, WD.tenant_id, WD.webhook_id, WD.event_type, WD.url, WD.body, WD.attempts)
)
SELECT_WEBHOOK_SECRETS = select(W.id, W.secret).where(W.id.in_(bindparam("p_ids", expanding=True)))
RECORD_DELIVERY = (
    update(webhook_deliveries)
    .where(WD.id == bindparam("p_id"), WD.attempts == bindparam("p_attempt"), WD.status == "pending")
    .values(
        status=bindparam("p_status"),
        response_code=bindparam("p_code"),
        last_error=bindparam("p_error"),
        next_attempt_at=db_now_plus(bindparam("p_delay")),
        updated_at=db_now(),
    )
)
COUNT_DELIVERIES_BY_STATUS = select(WD.status, func.count().label("n")).group_by(WD.status)


def list_deliveries(*, with_status: bool, with_webhook: bool, with_cursor: bool) -> Select[Any]:
    stmt = select(*_DELIVERY_COLUMNS).where(WD.tenant_id == bindparam("p_tenant"))
    if with_status:
        stmt = stmt.where(WD.status == bindparam("p_status"))
    if with_webhook:
        stmt = stmt.where(WD.webhook_id == bindparam("p_webhook"))
    if with_cursor:
        stmt = stmt.where(WD.id < bindparam("p_before"))
    return stmt.order_by(WD.id.desc()).limit(bindparam("p_limit"))


# --- metrics (cheap: index-backed counts over all tenants) -------------------------------------------
COUNT_ALL_JOBS_BY_STATUS = select(J.status, func.count().label("n")).group_by(J.status)
# Only the statuses a partial index covers: counting every succeeded action would scan the whole table.
COUNT_OPEN_ACTIONS = (
    select(A.status, func.count().label("n"))
    .where(A.status.in_([*_CLAIMABLE, _RUNNING, ActionStatus.FAILED.value]))
    .group_by(A.status)
)

# --- retention (the leader prunes finished jobs and everything hanging off them, in batches) -----------
SELECT_EXPIRED_JOBS = (
    select(J.id)
    .where(J.finished_at.is_not(None), J.finished_at < db_now_plus(bindparam("p_age")))
    .order_by(J.finished_at)
    .limit(bindparam("p_limit"))
)
_EXPIRED_IDS: Any = bindparam("p_ids", expanding=True)
PRUNE_ACTIONS = delete(actions).where(A.job_id.in_(_EXPIRED_IDS))
PRUNE_OUTBOX = delete(outbox).where(OB.action_id.in_(select(A.id).where(A.job_id.in_(_EXPIRED_IDS))))
PRUNE_DEDUP = delete(dedup).where(dedup.c.job_id.in_(_EXPIRED_IDS))
PRUNE_JOB_DELIVERIES = delete(webhook_deliveries).where(WD.job_id.in_(_EXPIRED_IDS))
PRUNE_JOB_FIRES = delete(schedule_fires).where(SF.job_id.in_(_EXPIRED_IDS))
PRUNE_JOBS = delete(jobs).where(J.id.in_(_EXPIRED_IDS))
_OLD_DELIVERIES = (
    select(WD.id)
    .where(WD.status != "pending", WD.created_at < db_now_plus(bindparam("p_age")))
    .limit(bindparam("p_limit"))
)
PRUNE_OLD_DELIVERIES = delete(webhook_deliveries).where(WD.id.in_(_OLD_DELIVERIES))
_OLD_FIRES = (
    select(SF.schedule_id, SF.fire_time)
    .where(SF.fired_at < db_now_plus(bindparam("p_age")))
    .limit(bindparam("p_limit"))
)
PRUNE_OLD_FIRES = delete(schedule_fires).where(tuple_(SF.schedule_id, SF.fire_time).in_(_OLD_FIRES))

COUNT_WAITING_ACTIONS = (
    select(func.count())
    .select_from(actions.join(jobs, J.id == A.job_id))
    .where(J.tenant_id == bindparam("p_tenant"), A.status.in_(_CLAIMABLE))
)

# --- API keys (looked up by their public prefix; the hash is compared by the caller) ----------------------
_KEY_COLUMNS = (K.id, K.tenant_id, K.name, K.prefix, K.key_hash, K.scopes, K.created_at, K.revoked_at)
INSERT_API_KEY = insert(api_keys).values(created_at=db_now()).returning(*_KEY_COLUMNS)
SELECT_API_KEY_BY_PREFIX = select(*_KEY_COLUMNS).where(K.prefix == bindparam("p_prefix"))
SELECT_ANY_ACTIVE_API_KEY = select(K.id).where(K.revoked_at.is_(None)).limit(1)


def list_api_keys(*, with_tenant: bool) -> Select[Any]:
    stmt = select(*_KEY_COLUMNS)
    if with_tenant:
        stmt = stmt.where(K.tenant_id == bindparam("p_tenant"))
    return stmt.order_by(K.tenant_id, K.created_at, K.id)


def select_api_key(*, with_tenant: bool) -> Select[Any]:
    """One key by id, or by prefix (``p_ref`` is matched against both); optionally only a tenant's."""
    stmt = select(*_KEY_COLUMNS).where(or_(K.id == bindparam("p_id"), K.prefix == bindparam("p_ref")))
    if with_tenant:
        stmt = stmt.where(K.tenant_id == bindparam("p_tenant"))
    return stmt


REVOKE_API_KEY = (
    update(api_keys)
    .where(K.id == bindparam("p_id"), K.revoked_at.is_(None))
    .values(revoked_at=db_now())
    .returning(*_KEY_COLUMNS)
)

# --- audit log --------------------------------------------------------------------------------------------
INSERT_AUDIT = insert(audit).values(at=db_now())
_AUDIT_COLUMNS = (AU.id, AU.tenant_id, AU.at, AU.actor_key_id, AU.actor, AU.action, AU.target, AU.details)


def list_audit(*, with_cursor: bool, with_action: bool) -> Select[Any]:
    """Keyset page of a tenant's audit log, newest first."""
    stmt = select(*_AUDIT_COLUMNS).where(AU.tenant_id == bindparam("p_tenant"))
    if with_action:
        stmt = stmt.where(AU.action == bindparam("p_action"))
    if with_cursor:
        stmt = stmt.where(AU.id < bindparam("p_before"))
    return stmt.order_by(AU.id.desc()).limit(bindparam("p_limit"))


PING = select(literal(1))
PG_NOTIFY_OUTBOX = select(func.pg_notify("jobyard_outbox", ""))


# --- PostgreSQL hot path ------------------------------------------------------------------------------
# The statements below run on the asyncpg driver connection, bypassing SQLAlchemy's per-call compile and
# parameter processing. Each is ONE statement (one round trip, one implicit transaction) that does what the
# portable statements above do in several; arrays are bound with ``= ANY($n)`` / ``unnest`` so the SQL text
# is the same for every batch size and the driver's prepared-statement cache hits every time.
#
# Plans. These statements address rows by primary key, and must keep doing so whatever the planner estimates.
# Two things went wrong before (found in benchmark runs that were 2x slower than their neighbours): a status
# test written like a partial index's predicate (``status IN ('queued', 'retrying')``, ``status = 'running'``)
# let the planner walk the whole partial index, that is every queued action (the claim) or every running one
# (the completion), per call, whenever its estimates made that index look small (an unanalysed table, a quiet
# moment); and a plan chosen while a table was tiny (a sequential scan) stayed cached on the connection as the
# table grew. So the status tests compare ``COLLATE "C"`` (the same equality, but no longer the predicate's
# expression, so the partial indexes cannot serve them), and the hot-path connections run with
# ``enable_seqscan = off`` (see ``Repository._driver_pool``).
# jsonb parameters are bound as JSON text (the engine's jsonb codec takes text); the codec decodes results.

# Jobs as parallel arrays, one element per job ($1-$10: id, tenant, name, metadata JSON, total, webhook URL, and
# the audit row's actor, key id, details JSON, action; no audit row where the actor is NULL), their actions as
# parallel arrays tagged with their job ($11-$20), the outbox rows ($21-$23), the hold ($24). One statement and
# one commit for all of them (store/batching.py); the first job's row carries every outbox row id.
PG_CREATE_JOBS = """
WITH job_in AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                         $8::uuid[], $9::text[], $10::text[])
         AS j(id, tenant_id, name, metadata, total, webhook_url, actor, actor_key_id, details, audit_action)
), new_jobs AS (
    INSERT INTO jobyard_jobs (id, tenant_id, name, metadata, status, total, succeeded, failed, cancelled,
                              created_at, updated_at, webhook_url)
    SELECT j.id, j.tenant_id, j.name, j.metadata::jsonb, 'pending', j.total, 0, 0, 0,
           statement_timestamp(), statement_timestamp(), j.webhook_url
    FROM job_in j
    RETURNING id, tenant_id, name, metadata, status, total, succeeded, failed, cancelled,
              created_at, started_at, finished_at
), new_actions AS (
    INSERT INTO jobyard_actions (id, job_id, seq, type, queue, payload, status, attempt, max_attempts, timeout,
                                 progress, concurrency_key, concurrency_limit, available_at, created_at, updated_at)
    SELECT a.id, a.job_id, a.seq, a.type, a.queue, a.payload::jsonb, 'queued', 0, a.max_attempts, a.timeout,
           0, a.concurrency_key, a.concurrency_limit, statement_timestamp(), statement_timestamp(),
           statement_timestamp()
    FROM unnest($11::uuid[], $12::uuid[], $13::int[], $14::text[], $15::text[], $16::text[], $17::int[],
                $18::float8[], $19::text[], $20::int[])
         AS a(job_id, id, seq, type, queue, payload, max_attempts, timeout, concurrency_key, concurrency_limit)
), new_outbox AS (
    -- one row per message: $23 bodies (a packed message or one action), $21 their first action ids, $22 queues
    -- held back from the relay for $24 seconds when the API process publishes them itself (the handoff)
    INSERT INTO jobyard_outbox (action_id, queue, body, available_at)
    SELECT o.action_id, o.queue, o.body, statement_timestamp() + make_interval(secs => $24::float8)
    FROM unnest($21::uuid[], $22::text[], $23::bytea[]) AS o(action_id, queue, body)
    RETURNING id
), new_events AS (
    INSERT INTO jobyard_events (event_id, type, tenant_id, job_id, data, created_at)
    SELECT gen_random_uuid(), 'job.created', j.tenant_id, j.id,
           jsonb_build_object('job_id', j.id, 'name', j.name, 'status', j.status, 'total', j.total), j.created_at
    FROM new_jobs j
), new_audit AS (
    INSERT INTO jobyard_audit (tenant_id, at, actor_key_id, actor, action, target, details)
    SELECT j.tenant_id, statement_timestamp(), j.actor_key_id, j.actor, j.audit_action, j.id::text, j.details::jsonb
    FROM job_in j WHERE j.actor IS NOT NULL
)
SELECT new_jobs.*,
       CASE WHEN new_jobs.id = ($1::uuid[])[1] THEN ARRAY(SELECT id FROM new_outbox) END AS outbox_ids,
       CASE WHEN new_jobs.id = ($1::uuid[])[1] AND $24::float8 = 0
            THEN pg_notify('jobyard_outbox', '') END AS woke_relay
FROM new_jobs
"""

PG_CLAIM_ACTIONS = """
WITH claimed AS (
    UPDATE jobyard_actions
    SET status = 'running', attempt = attempt + 1,
        lease_expires_at = statement_timestamp() + make_interval(secs => $3),
        started_at = statement_timestamp(), finished_at = NULL, worker_id = $2,
        progress = 0, progress_message = NULL, updated_at = statement_timestamp()
    WHERE id = ANY($1::uuid[]) AND status COLLATE "C" IN ('queued', 'retrying')
      AND available_at <= statement_timestamp()
    RETURNING id, job_id, type, queue, payload, attempt, max_attempts, timeout, concurrency_key, concurrency_limit
), started_jobs AS (
    -- SKIP LOCKED: a job row locked by another writer is being moved on by it; never wait (or deadlock) here.
    -- The jobs are looked up by key, from an array, and their status compared COLLATE "C" (see "Plans" above):
    -- written as ``id IN (SELECT job_id FROM claimed) AND status = 'pending'``, the planner joined instead,
    -- walking the whole primary key index of the jobs (or the tenant-and-status one) whenever the table looked
    -- small to it, which made every claim cost PostgreSQL time in proportion to all the jobs stored.
    UPDATE jobyard_jobs SET status = 'running', started_at = statement_timestamp(), updated_at = statement_timestamp()
    WHERE id = ANY(ARRAY(
        SELECT id FROM jobyard_jobs
        WHERE id = ANY(ARRAY(SELECT DISTINCT job_id FROM claimed)) AND status COLLATE "C" = 'pending'
        FOR NO KEY UPDATE SKIP LOCKED
    ))
)
SELECT * FROM claimed
"""

# Outcomes as parallel arrays: id, attempt, new status, result JSON, error, retry delay, queue, message body.
# Fenced on the attempt; retries re-enter the outbox; the counters of every job of the batch move in the same
# statement, from the transitions that were accepted only (fan-in counts each action once). Job rows are locked
# in id order first, so two batches touching the same jobs never deadlock.
PG_COMPLETE_ACTIONS = """
WITH outcome AS MATERIALIZED (
    -- ``held``: the status an action must still have for its outcome to be taken (the fence), as a column of the
    -- outcome rather than a constant so that it is a join condition (see ``done``).
    SELECT o.*, 'running'::text AS held
    FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::bytea[])
         AS o(id, attempt, status, result, error, delay, queue, body)
), done AS (
    UPDATE jobyard_actions a
    SET status = o.status,
        result = CASE WHEN o.status = 'succeeded' THEN o.result::jsonb ELSE a.result END,
        error = CASE WHEN o.status = 'succeeded' THEN NULL ELSE o.error END,
        progress = CASE WHEN o.status = 'succeeded' THEN 1.0 ELSE a.progress END,
        lease_expires_at = NULL,
        available_at = CASE WHEN o.status = 'retrying'
                            THEN statement_timestamp() + make_interval(secs => o.delay) ELSE a.available_at END,
        finished_at = CASE WHEN o.status = 'retrying' THEN a.finished_at ELSE statement_timestamp() END,
        updated_at = statement_timestamp()
    FROM outcome o
    -- The batch's actions by key (``= ANY``), matched to their outcomes by a hash join. With the fence written as a
    -- constant (``status = 'running'``), the planner estimated one running action among the batch's and joined
    -- by a nested loop over them (per action, every outcome of the batch: 200 × 200 comparisons for a full
    -- batch), or over every running action stored when the ids were not given as an array.
    WHERE a.id = ANY($1::uuid[]) AND a.id = o.id AND a.attempt = o.attempt AND a.status COLLATE "C" = o.held
    RETURNING a.id, a.job_id, a.type, a.status, a.available_at
), retried AS (
    INSERT INTO jobyard_outbox (action_id, queue, body, available_at)
    SELECT d.id, o.queue, o.body, d.available_at FROM done d JOIN outcome o ON o.id = d.id
    WHERE d.status = 'retrying'
), delta AS (
    SELECT job_id,
           count(*) FILTER (WHERE status = 'succeeded') AS s,
           count(*) FILTER (WHERE status = 'failed') AS f,
           count(*) FILTER (WHERE status = 'cancelled') AS c
    FROM done WHERE status <> 'retrying' GROUP BY job_id
), locked AS (
    SELECT j.id, j.ready_at IS NULL AS unready FROM jobyard_jobs j
    WHERE j.id IN (SELECT job_id FROM delta) ORDER BY j.id FOR NO KEY UPDATE
), counted AS (
    UPDATE jobyard_jobs j
    SET succeeded = j.succeeded + d.s, failed = j.failed + d.f, cancelled = j.cancelled + d.c,
        status = CASE
            WHEN j.status = 'cancelled' THEN 'cancelled'  -- a cancelled job stays cancelled
            WHEN j.total <= j.succeeded + d.s + j.failed + d.f + j.cancelled + d.c THEN
                CASE WHEN j.failed + d.f > 0 THEN 'failed'
                     WHEN j.cancelled + d.c > 0 THEN 'cancelled'
                     ELSE 'succeeded' END
            WHEN j.status = 'pending' THEN 'running'
            ELSE j.status END,
        finished_at = CASE WHEN j.total <= j.succeeded + d.s + j.failed + d.f + j.cancelled + d.c
                           THEN statement_timestamp() ELSE j.finished_at END,
        ready_at = CASE WHEN j.ready_at IS NULL AND j.total <= j.succeeded + d.s + j.failed + d.f + j.cancelled + d.c
                        THEN statement_timestamp() ELSE j.ready_at END,
        updated_at = statement_timestamp()
    FROM delta d, locked l
    WHERE j.id = d.job_id AND l.id = j.id
    RETURNING j.id, j.tenant_id, j.status, j.total, j.succeeded, j.failed, j.cancelled, l.unready,
              j.succeeded + j.failed + j.cancelled >= j.total
              AND j.succeeded + j.failed + j.cancelled - d.s - d.f - d.c < j.total AS became_final
), new_events AS (
    -- Domain events in the same transaction: per job action.failed, then job.ready (when the job finished before
    -- the readiness sweep saw it), then job.completed; the ORDER BY gives their ids that order.
    INSERT INTO jobyard_events (event_id, type, tenant_id, job_id, action_id, data, created_at)
    SELECT gen_random_uuid(), e.type, e.tenant_id, e.job_id, e.action_id, e.data, statement_timestamp()
    FROM (
        SELECT 0 AS kind, 'action.failed' AS type, c.tenant_id, d.job_id, d.id AS action_id,
               jsonb_build_object('job_id', d.job_id, 'action_id', d.id, 'type', d.type, 'error', o.error) AS data
        FROM done d JOIN counted c ON c.id = d.job_id JOIN outcome o ON o.id = d.id WHERE d.status = 'failed'
        UNION ALL
        SELECT 1, 'job.ready', c.tenant_id, c.id, NULL::uuid, jsonb_build_object('job_id', c.id, 'total', c.total)
        FROM counted c WHERE c.became_final AND c.unready AND c.status <> 'cancelled'
        UNION ALL
        SELECT 2, 'job.completed', c.tenant_id, c.id, NULL::uuid,
               jsonb_build_object('job_id', c.id, 'status', c.status, 'total', c.total, 'succeeded', c.succeeded,
                                  'failed', c.failed, 'cancelled', c.cancelled)
        FROM counted c WHERE c.became_final
    ) e
    ORDER BY e.job_id, e.kind
)
SELECT d.id, d.job_id, d.status, c.status AS job_status,
       c.succeeded + c.failed + c.cancelled >= c.total AS job_finished
FROM done d LEFT JOIN counted c ON c.id = d.job_id
"""

# Take due rows out of the outbox in the transaction that publishes them: rolled back (the rows come back) if
# the broker does not confirm.
PG_TAKE_DUE_OUTBOX = """
DELETE FROM jobyard_outbox
WHERE id IN (
    SELECT id FROM jobyard_outbox WHERE available_at <= statement_timestamp()
    ORDER BY available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, queue, body
"""

# Domain events, as the outbox: taken out in the transaction that publishes them (rolled back, so they come back,
# if the broker does not confirm). A job.completed row carries its job's own webhook URL, if it has one, looked up
# by key for that row only (a join let the planner hash every job stored to find a batch's few).
PG_TAKE_EVENTS = """
WITH taken AS (
    DELETE FROM jobyard_events
    WHERE id IN (SELECT id FROM jobyard_events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id, event_id, type, tenant_id, job_id, action_id, data, created_at
)
SELECT t.id, t.event_id, t.type, t.tenant_id, t.job_id, t.action_id, t.data, t.created_at,
       CASE WHEN t.type = 'job.completed'
            THEN (SELECT j.webhook_url FROM jobyard_jobs j WHERE j.id = t.job_id) END AS webhook_url
FROM taken t
"""
PG_SUBSCRIBED_WEBHOOKS = """
SELECT id, tenant_id, url, events FROM jobyard_webhooks WHERE active AND tenant_id = ANY($1::text[])
"""
PG_INSERT_DELIVERIES = """
INSERT INTO jobyard_webhook_deliveries
    (id, tenant_id, webhook_id, event_id, event_type, job_id, url, body, status, attempts,
     next_attempt_at, created_at, updated_at)
SELECT u.id, u.tenant_id, u.webhook_id, u.event_id, u.event_type, u.job_id, u.url, u.body, 'pending', 0,
       statement_timestamp(), statement_timestamp(), statement_timestamp()
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::text[], $8::bytea[])
    AS u(id, tenant_id, webhook_id, event_id, event_type, job_id, url, body)
"""

# A job and its actions in one round trip (one snapshot): the job's columns, then one row per action.
PG_SELECT_JOB_WITH_ACTIONS = """
SELECT j.id, j.tenant_id, j.name, j.metadata, j.status, j.total, j.succeeded, j.failed, j.cancelled,
       j.created_at, j.started_at, j.finished_at,
       a.id AS a_id, a.seq AS a_seq, a.type AS a_type, a.queue AS a_queue, a.status AS a_status,
       a.attempt AS a_attempt, a.max_attempts AS a_max_attempts, a.timeout AS a_timeout, a.progress AS a_progress,
       a.progress_message AS a_progress_message, a.result AS a_result, a.error AS a_error,
       a.created_at AS a_created_at, a.started_at AS a_started_at, a.finished_at AS a_finished_at
FROM jobyard_jobs j LEFT JOIN jobyard_actions a ON a.job_id = j.id
WHERE j.id = $1 AND j.tenant_id = $2
ORDER BY a.seq
"""
