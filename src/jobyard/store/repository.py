"""The repository: the only code that executes SQL. Every statement comes from ``queries``.

Methods are batch-shaped (claim, complete, publish many rows per transaction) because the hot path of a job
system is bounded by round trips to the database, not by the work per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import in_greenlet

from jobyard import config, jsonutil, messages
from jobyard import domain_events as ev
from jobyard.config import Settings
from jobyard.errors import Conflict, NotFound, StoreError, StoreUnavailable
from jobyard.ids import uuid7, uuid7_many
from jobyard.model import (
    ActionRecord,
    ActionSpecIn,
    ActionStatus,
    ApiKeyRecord,
    AuditEntry,
    AuditRecord,
    ClaimedAction,
    Completion,
    JobRecord,
    JobStatus,
    Outcome,
    OutcomeKind,
)
from jobyard.schedules import ScheduleRecord
from jobyard.store import queries as q
from jobyard.store.batching import Coalescer
from jobyard.store.dbtime import db_now

log = logging.getLogger("jobyard.store")

OUTBOX_CHANNEL = "jobyard_outbox"


# Actions per multi-job insert: a burst of large jobs goes in several statements rather than one huge one.
_MAX_ACTIONS_PER_INSERT = 5_000


@dataclass(frozen=True, slots=True)
class _NewJob:
    """A submission on its way into PostgreSQL's multi-job insert (``Repository._insert_jobs_pg``)."""

    tenant_id: str
    name: str | None
    metadata: dict[str, Any]
    actions: Sequence[ActionSpecIn]
    job_id: UUID
    action_ids: list[UUID]
    webhook_url: str | None
    audit: AuditEntry | None
    outbox: list[tuple[UUID, str, bytes]]


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job of a batch for ``Repository.create_jobs`` (the arguments ``create_job`` takes for one job)."""

    name: str | None
    metadata: dict[str, Any]
    actions: Sequence[ActionSpecIn]
    dedup: Sequence[DedupKey] = ()
    webhook_url: str | None = None
    audit: AuditEntry | None = None


@dataclass(frozen=True, slots=True)
class DedupKey:
    """A deduplication key for a submission: ``idem:{Idempotency-Key}`` (must match) or ``sum:{checksum}``."""

    key: str
    request_hash: str
    ttl: float
    must_match: bool = True
    shown: str | None = None  # the Idempotency-Key as the client sent it, when the key is derived from it

    def describe(self) -> str:
        kind, _, value = self.key.partition(":")
        return f"Idempotency-Key {self.shown or repr(value)}" if kind == "idem" else "this content checksum"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    queue: str
    body: bytes


class Handoff(Protocol):
    """Takes a new job's messages right after its commit and publishes them itself (see ``jobyard.handoff``).

    The job's outbox rows are written held back for ``hold`` seconds, so the relay leaves them to it; whatever
    it does not publish and delete in that time, the relay publishes when the rows come due.
    """

    hold: float

    def offer(self, row_ids: list[int], messages: list[tuple[str, bytes]]) -> None: ...


def database_url_for_driver(url: str) -> str:
    """Map the user-facing URL to the async driver SQLAlchemy needs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def server_settings(url: str) -> dict[str, str]:
    """asyncpg ``server_settings`` for a connection to ``url``: the process's name, unless the URL sets its own."""
    return {} if "application_name=" in url else {"application_name": config.process_name}


_UNAVAILABLE_HINT = "the database is unreachable; check JOBYARD_DATABASE_URL and that the server is running"


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map driver and SQLAlchemy errors to jobyard's hierarchy at the adapter boundary."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
            raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
        text = str(exc.orig).lower()
        if any(s in text for s in ("connection", "terminating", "shutting down", "starting up")):
            raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
        raise StoreError(f"database error: {exc.orig}") from exc
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StoreError(f"database error: {exc}") from exc


# asyncpg's own exception roots: server errors, client-side misuse of a closed connection, and protocol surprises.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def caused_by_store(exc: BaseException) -> bool:
    """Whether a driver or database error sits anywhere in ``exc``'s chain (an outage that escaped translation)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (*_DRIVER_ERRORS, sqlalchemy.exc.SQLAlchemyError)):
            return True
        current = current.__cause__ or current.__context__
    return False


# SQLSTATE classes that mean the connection or the server is going away, not that the statement is wrong.
_DISCONNECT_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | ConnectionError | TimeoutError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return any(state.startswith(prefix) for prefix in _DISCONNECT_SQLSTATES)


def _about_the_data(exc: Exception) -> bool:
    """Whether PostgreSQL refused a statement for what it would write (SQLSTATE classes 22 and 23: a value too
    long, a constraint broken): then the other submissions grouped with it can still be written one by one."""
    state = getattr(exc.__cause__, "sqlstate", None) or ""
    return isinstance(exc, StoreError) and state[:2] in ("22", "23")


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _aware_row(row: Row[*tuple[Any, ...]], *times: str) -> dict[str, Any]:
    """A row as a dict, the named times zone-aware on SQLite too (which stores naive UTC times)."""
    values = dict(row._mapping)
    for key in times:
        values[key] = _utc(values[key])
    return values


def _webhook(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    return _aware_row(row, "created_at")


def _job(row: Row[*tuple[Any, ...]]) -> JobRecord:
    return JobRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        metadata=row.metadata or {},
        status=JobStatus(row.status),
        total=row.total,
        succeeded=row.succeeded,
        failed=row.failed,
        cancelled=row.cancelled,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
    )


def _job_pg(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        metadata=row["metadata"] or {},
        status=JobStatus(row["status"]),
        total=row["total"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        cancelled=row["cancelled"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _action(row: Row[*tuple[Any, ...]]) -> ActionRecord:
    m = row._mapping
    return ActionRecord(
        id=row.id,
        job_id=row.job_id,
        seq=row.seq,
        type=row.type,
        queue=row.queue,
        status=ActionStatus(row.status),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        timeout=row.timeout,
        progress=row.progress,
        progress_message=row.progress_message,
        result=row.result,
        error=row.error,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        payload=m.get("payload"),
    )


def _claimed(row: Row[*tuple[Any, ...]]) -> ClaimedAction:
    return ClaimedAction(
        id=row.id,
        job_id=row.job_id,
        type=row.type,
        queue=row.queue,
        payload=row.payload,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        timeout=row.timeout,
        concurrency_key=row.concurrency_key,
        concurrency_limit=row.concurrency_limit,
    )


def _claimed_pg(row: asyncpg.Record) -> ClaimedAction:
    return ClaimedAction(
        id=row["id"],
        job_id=row["job_id"],
        type=row["type"],
        queue=row["queue"],
        payload=row["payload"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        concurrency_key=row["concurrency_key"],
        concurrency_limit=row["concurrency_limit"],
    )


def _joined_action(job_id: UUID, row: asyncpg.Record) -> ActionRecord:
    return ActionRecord(
        id=row["a_id"],
        job_id=job_id,
        seq=row["a_seq"],
        type=row["a_type"],
        queue=row["a_queue"],
        status=ActionStatus(row["a_status"]),
        attempt=row["a_attempt"],
        max_attempts=row["a_max_attempts"],
        timeout=row["a_timeout"],
        progress=row["a_progress"],
        progress_message=row["a_progress_message"],
        result=row["a_result"],
        error=row["a_error"],
        created_at=row["a_created_at"],
        started_at=row["a_started_at"],
        finished_at=row["a_finished_at"],
    )


def _schedule(row: Row[*tuple[Any, ...]]) -> ScheduleRecord:
    values = _aware_row(row, "next_fire_at", "last_fired_at", "created_at", "updated_at")
    values["paused"] = bool(values["paused"])
    return ScheduleRecord(**values)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    name: str | None
    metadata: dict[str, Any]
    actions: list[ActionSpecIn]


@dataclass(frozen=True, slots=True)
class FireDecision:
    """What to do with a due schedule: run ``job`` for ``fire_time`` (if any), then wait for ``next_fire_at``."""

    fire_time: datetime | None
    next_fire_at: datetime
    job: ScheduledJob | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FireOutcome:
    schedule: ScheduleRecord
    decision: FireDecision
    job_id: UUID | None  # None: skipped, failed to build, or another leader fired this time already


def _api_key(row: Row[*tuple[Any, ...]]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        key_hash=row.key_hash,
        scopes=tuple(row.scopes.split()),
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        revoked_at=_utc(row.revoked_at),
    )


def _audit_row(entry: AuditEntry, target: str | None = None) -> dict[str, Any]:
    return {
        "tenant_id": entry.tenant_id,
        "actor_key_id": entry.actor_key_id,
        "actor": entry.actor[:200],
        "action": entry.action,
        "target": entry.target if entry.target is not None else target,
        "details": entry.details,
    }


_COMPLETE_STATEMENT = {
    OutcomeKind.SUCCEEDED: q.COMPLETE_SUCCEEDED,
    OutcomeKind.RETRY: q.COMPLETE_RETRY,
    OutcomeKind.FAILED: q.COMPLETE_FAILED,
    OutcomeKind.CANCELLED: q.COMPLETE_CANCELLED,
    OutcomeKind.RELEASE: q.COMPLETE_RELEASE,
}
_FINAL_STATUS = {
    OutcomeKind.SUCCEEDED: ActionStatus.SUCCEEDED,
    OutcomeKind.RETRY: ActionStatus.RETRYING,
    OutcomeKind.FAILED: ActionStatus.FAILED,
    OutcomeKind.CANCELLED: ActionStatus.CANCELLED,
    OutcomeKind.RELEASE: ActionStatus.QUEUED,
}
_REQUEUES = (OutcomeKind.RETRY, OutcomeKind.RELEASE)


@dataclass(frozen=True, slots=True)
class CancelResult:
    job_id: UUID
    cancelled_action_ids: list[UUID]
    running_action_ids: list[UUID]


class Leadership:
    """Held while this process leads; ``alive()`` checks the lock's connection is still there."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def alive(self) -> bool:
        if self._connection is None:
            return True
        try:
            await self._connection.fetchval("SELECT 1", timeout=5)
            return True
        except Exception:
            return False

    async def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=2)
            self._connection = None


class Repository:
    """Jobs, actions and the outbox in PostgreSQL or SQLite."""

    def __init__(self, engine: AsyncEngine, *, raw_url: str, pool_size: int = 10, message_actions: int = 1) -> None:
        self.engine = engine
        self.message_actions = message_actions  # a job's actions per outbox row (one broker message)
        self.dialect = engine.dialect.name
        self._raw_url = raw_url
        self._outbox_event = asyncio.Event()
        self._listener: Any = None
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.jobs_inserted = 0  # jobs written by the group commit (its runs count the statements)
        # Submissions that arrive while one is being written are written together (store/batching.py).
        # An item is one submission: a job, or a batch of jobs (``create_jobs``) that must go in one statement.
        self.job_inserts: Coalescer[list[_NewJob], list[JobRecord]] = Coalescer(
            self._insert_submissions_pg,
            size=lambda jobs: sum(len(job.actions) for job in jobs),
            max_weight=_MAX_ACTIONS_PER_INSERT,
            alone=_about_the_data,
            gone=lambda: StoreUnavailable("the process is stopping; the submission may not have been stored"),
        )

    # --- lifecycle ----------------------------------------------------------------------------------
    async def close(self) -> None:
        await self.job_inserts.drain()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        await self.engine.dispose()

    async def ping(self) -> None:
        async with translate_errors(), self.engine.connect() as conn:
            await conn.execute(q.PING)

    async def migrate(self) -> None:
        from jobyard.store.migrate import upgrade_to_head

        async with translate_errors(), self.engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    def _dsn(self) -> str:
        return database_url_for_driver(self._raw_url).replace("postgresql+asyncpg://", "postgresql://")

    async def _driver_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                # Every hot-path statement addresses rows by key: a sequential scan is never the plan we want, and
                # one chosen while a table was tiny stayed cached on the connection as the table grew (queries.py).
                settings = {"enable_seqscan": "off", **server_settings(self._raw_url)}
                try:
                    self._pool = await self._create_driver_pool(settings)
                except asyncpg.PostgresError as exc:
                    # PgBouncer refuses start-up parameters it does not know (unless they are listed in its
                    # ignore_startup_parameters): go on without this one rather than not at all.
                    if "unsupported startup parameter" not in str(exc):
                        raise
                    log.warning(
                        "the database (a pooler?) refused enable_seqscan as a start-up parameter (%s); the hot path "
                        "runs without it, so its plans rely on the tables' statistics being current (autovacuum)",
                        exc,
                    )
                    del settings["enable_seqscan"]
                    self._pool = await self._create_driver_pool(settings)
            return self._pool

    async def _create_driver_pool(self, settings: dict[str, str]) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._dsn(),
            min_size=1,
            max_size=self._pool_size,
            # Connections are kept once opened (see ``warm``): closing idle ones after asyncpg's default five
            # minutes made the next burst wait for connects again.
            max_inactive_connection_lifetime=0,
            init=_init_driver_connection,
            # asyncpg resets a connection on every release with a round trip (UNLISTEN, RESET ALL, ...); the hot
            # path never changes session state, so that round trip is pure cost.
            reset=_keep_session,
            timeout=10,
            server_settings=settings,
        )

    async def warm(self) -> None:
        """Open every connection of the hot-path pool now (the API does at start-up); best effort.

        A pool that grows under a burst makes the requests of that burst wait for connects (a backend start and
        the codec set-up, tens of ms each): status reads at 1,000/s showed those waits as their p99.
        """
        if not self._fast:
            return
        held: list[asyncpg.Connection] = []
        try:
            pool = self._pool or await self._driver_pool()
            for _ in range(self._pool_size):
                held.append(await pool.acquire())
        except (*_DRIVER_ERRORS, OSError, TimeoutError) as exc:
            log.info("could not open the whole connection pool yet (%s); it grows on demand", exc)
        finally:
            for conn in held:
                await pool.release(conn)

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection for the PostgreSQL hot path (the ``q.PG_*`` statements).

        The hot path bypasses SQLAlchemy's connection and statement layers, whose per-call cost dominated the
        profiles (pool checkout, compile-cache keys, parameter processing); its pool is created on first use,
        so processes that never take the hot path never open it. No transaction is open: each statement is its
        own implicit transaction unless the caller opens one. Errors are translated here.
        """
        try:
            pool = self._pool or await self._driver_pool()
            # No acquire timeout: asyncpg implements it with a wait_for (a task per acquire on Python 3.11), and
            # the wait is bounded anyway by the pool's statements finishing and the connect timeout.
            async with pool.acquire() as conn:
                yield conn
        except (*_DRIVER_ERRORS, OSError, TimeoutError) as exc:
            # InternalClientError covers asyncpg's ProtocolError: an unexpected message while the server goes away.
            if _is_disconnect(exc):
                raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
            raise StoreError(f"database error: {exc}") from exc

    @property
    def _fast(self) -> bool:
        return self.dialect == "postgresql"

    # --- submit -------------------------------------------------------------------------------------
    async def create_job(
        self,
        *,
        tenant_id: str,
        name: str | None,
        metadata: dict[str, Any],
        actions: Sequence[ActionSpecIn],
        connection: AsyncConnection | None = None,
        dedup: Sequence[DedupKey] = (),
        webhook_url: str | None = None,
        job_id: UUID | None = None,
        audit: AuditEntry | None = None,
        handoff: Handoff | None = None,
    ) -> tuple[JobRecord, list[UUID]]:
        """Insert the job, its actions and their outbox rows in one transaction.

        With ``audit``, the submission is recorded in the audit log in the same transaction (its target is the
        new job's id).

        With ``handoff``, the outbox rows are held back from the relay for ``handoff.hold`` seconds and, once
        committed, offered to the handoff (which publishes them at once); the relay is not woken. Ignored with
        ``connection``: only the caller knows when its transaction commits.

        Pass ``connection`` to enqueue inside a transaction the caller already holds (the caller commits).
        With ``dedup`` keys, a key already held (and not expired) returns the job that holds it instead, with
        no action ids; a key held for a different request raises ``Conflict``. The keys' unique constraint makes
        this safe against concurrent submissions.
        """
        new = self._new_job(tenant_id, name, metadata, actions, webhook_url, audit, job_id)
        job_id, action_ids, outbox = new.job_id, new.action_ids, new.outbox
        if connection is not None:
            handoff = None
        if self._fast and connection is None and not dedup:
            return (await self.job_inserts.submit(handoff, [new]))[0], action_ids
        hold = handoff.hold if handoff is not None else 0.0
        job_row = {
            "id": job_id,
            "tenant_id": tenant_id,
            "name": name,
            "metadata": metadata,
            "status": JobStatus.PENDING.value,
            "total": len(actions),
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
            "webhook_url": webhook_url,
        }
        created_event = ev.event_values(ev.JOB_CREATED, tenant_id, job_id, ev.job_created(job_id, name, len(actions)))
        action_rows = []
        outbox_rows = []
        for seq, (aid, spec) in enumerate(zip(action_ids, actions, strict=True)):
            action_rows.append(
                {
                    "id": aid,
                    "job_id": job_id,
                    "seq": seq,
                    "type": spec.type,
                    "queue": spec.queue,
                    "payload": spec.payload,
                    "status": ActionStatus.QUEUED.value,
                    "attempt": 0,
                    "max_attempts": spec.max_attempts,
                    "timeout": spec.timeout,
                    "progress": 0.0,
                    "concurrency_key": spec.concurrency_key,
                    "concurrency_limit": spec.concurrency_limit,
                }
            )
        for first, queue, body in outbox:
            outbox_rows.append({"action_id": first, "queue": queue, "body": body, "p_hold": hold})
        row_ids: list[int] = []

        async def claim_keys(conn: AsyncConnection) -> Any:
            """Take every dedup key for this job; the existing job's row if one is already taken."""
            for key in dedup:
                params = {"p_tenant": tenant_id, "p_key": key.key}
                await conn.execute(q.DELETE_EXPIRED_DEDUP_KEY, params)
                taken = await conn.execute(
                    q.insert_dedup_unless_taken(self.dialect),
                    {**params, "p_job_id": job_id, "p_hash": key.request_hash, "p_ttl": key.ttl},
                )
                if taken.first() is not None:
                    continue
                holder = (await conn.execute(q.SELECT_DEDUP, params)).one()
                if key.must_match and holder.request_hash != key.request_hash:
                    raise Conflict(
                        f"{key.describe()} was already used for a different request (job {holder.job_id}); "
                        "use a new key for a new job"
                    )
                row = (await conn.execute(q.SELECT_JOB, {"p_id": holder.job_id, "p_tenant": tenant_id})).first()
                if row is not None:
                    return row
            return None

        async def write(conn: AsyncConnection) -> Row[Any]:
            now = db_now()
            row = (
                await conn.execute(
                    q.INSERT_JOB.values(created_at=now, updated_at=now).returning(*q._JOB_COLUMNS), job_row
                )
            ).one()
            await conn.execute(q.INSERT_ACTIONS.values(created_at=now, updated_at=now, available_at=now), action_rows)
            inserted = await conn.execute(q.INSERT_HELD_OUTBOX, outbox_rows)
            row_ids[:] = [r.id for r in inserted]
            await conn.execute(q.INSERT_EVENTS.values(created_at=now), [created_event])
            if audit is not None:
                await conn.execute(q.INSERT_AUDIT, _audit_row(audit, str(job_id)))
            if self.dialect == "postgresql" and not hold:
                await conn.execute(q.PG_NOTIFY_OUTBOX)
            return row

        async def run(conn: AsyncConnection) -> tuple[Any, bool]:
            existing = await claim_keys(conn) if dedup else None
            if existing is not None:
                return existing, False
            return await write(conn), True

        if connection is not None:
            async with translate_errors():
                row, created = await run(connection)
        else:
            async with self._tx() as conn:
                row, created = await run(conn)
            if created:
                self._hand_over(handoff, row_ids, outbox)
        return _job(row), action_ids if created else []

    async def create_jobs(
        self, *, tenant_id: str, jobs: Sequence[NewJob], handoff: Handoff | None = None
    ) -> list[tuple[JobRecord, list[UUID]]]:
        """Several jobs of one tenant in one transaction: all of them are stored, or none.

        For each job, in order, what ``create_job`` returns: its record and its action ids, or no action ids when
        one of its dedup keys returned a job stored before. On PostgreSQL, a batch without dedup keys goes through
        the group commit as one submission (one statement, with whatever other submissions are waiting) and its
        messages to ``handoff``; otherwise each job is written as ``create_job`` writes it, all in one
        transaction, and the relay publishes their messages.
        """
        if not jobs:
            return []
        if self._fast and not any(job.dedup for job in jobs):
            new = [self._new_job(tenant_id, j.name, j.metadata, j.actions, j.webhook_url, j.audit) for j in jobs]
            records = await self.job_inserts.submit(handoff, new)
            return [(record, item.action_ids) for record, item in zip(records, new, strict=True)]
        created: list[tuple[JobRecord, list[UUID]]] = []
        async with self._tx() as conn:
            for job in jobs:
                created.append(
                    await self.create_job(
                        tenant_id=tenant_id,
                        name=job.name,
                        metadata=job.metadata,
                        actions=job.actions,
                        connection=conn,
                        dedup=job.dedup,
                        webhook_url=job.webhook_url,
                        audit=job.audit,
                    )
                )
        if any(action_ids for _, action_ids in created):
            self._outbox_event.set()  # committed: the relay publishes them now rather than at its next look
        return created

    def _new_job(
        self,
        tenant_id: str,
        name: str | None,
        metadata: dict[str, Any],
        actions: Sequence[ActionSpecIn],
        webhook_url: str | None,
        audit: AuditEntry | None,
        job_id: UUID | None = None,
    ) -> _NewJob:
        """A submission with its ids and its outbox rows, ready to be written either way."""
        if job_id is None:  # the job's id and its actions' in one go (one lock, one read of the randomness)
            job_id, *action_ids = uuid7_many(len(actions) + 1)
        else:
            action_ids = uuid7_many(len(actions))
        outbox = self._outbox_bodies(job_id, action_ids, actions)
        return _NewJob(tenant_id, name, metadata, actions, job_id, action_ids, webhook_url, audit, outbox)

    def _hand_over(self, handoff: Handoff | None, row_ids: list[int], outbox: list[tuple[UUID, str, bytes]]) -> None:
        if handoff is None:
            self._outbox_event.set()
        else:
            handoff.offer(row_ids, [(queue, body) for _, queue, body in outbox])

    def _outbox_bodies(
        self, job_id: UUID, action_ids: list[UUID], actions: Sequence[ActionSpecIn]
    ) -> list[tuple[UUID, str, bytes]]:
        """A new job's outbox rows: (first action id, queue, body), each body up to ``message_actions`` actions.

        A row of several actions is a whole message; the row is keyed by its first action, which is enough for
        what looks rows up by action (the job.ready sweep, cancelling the job, retention): all are per job.
        """
        encoded = [
            messages.encode_action(
                aid,
                job_id,
                spec.type,
                spec.queue,
                spec.payload,
                spec.max_attempts,
                spec.timeout,
                spec.concurrency_key,
                spec.concurrency_limit,
            )
            for aid, spec in zip(action_ids, actions, strict=True)
        ]
        if self.message_actions <= 1:
            return [(aid, spec.queue, body) for aid, spec, body in zip(action_ids, actions, encoded, strict=True)]
        out = []
        for group in messages.chunks([spec.queue for spec in actions], self.message_actions):
            body = encoded[group[0]] if len(group) == 1 else messages.pack([encoded[i] for i in group])
            out.append((action_ids[group[0]], actions[group[0]].queue, body))
        return out

    async def _insert_submissions_pg(self, handoff: Any, submissions: Sequence[list[_NewJob]]) -> list[list[JobRecord]]:
        """The group commit's run: every job of these submissions in one statement; their records per submission."""
        records = await self._insert_jobs_pg(handoff, [job for jobs in submissions for job in jobs])
        out: list[list[JobRecord]] = []
        start = 0
        for jobs in submissions:
            out.append(records[start : start + len(jobs)])
            start += len(jobs)
        self.jobs_inserted += start
        return out

    async def _insert_jobs_pg(self, handoff: Any, jobs: Sequence[_NewJob]) -> list[JobRecord]:
        """Jobs, their actions, outbox rows, events and audit rows in one statement (one round trip, one commit).

        ``handoff`` is the key the submissions were grouped by: the outbox rows are held back from the relay for
        its ``hold`` and offered to it once committed; without one (``None``) the relay is woken.
        """
        hold = handoff.hold if handoff is not None else 0.0
        job_args: list[list[Any]] = [[] for _ in range(10)]
        action_args: list[list[Any]] = [[] for _ in range(10)]
        outbox_args: list[list[Any]] = [[], [], []]
        for job in jobs:
            audit = job.audit
            for column, value in zip(
                job_args,
                (
                    job.job_id,
                    job.tenant_id,
                    job.name,
                    jsonutil.dumps_str(job.metadata),
                    len(job.actions),
                    job.webhook_url,
                    audit.actor[:200] if audit is not None else None,
                    audit.actor_key_id if audit is not None else None,
                    jsonutil.dumps_str(audit.details) if audit is not None and audit.details is not None else None,
                    audit.action if audit is not None else None,
                ),
                strict=True,
            ):
                column.append(value)
            job_ids, ids, seqs, types, queues, payloads, attempts, timeouts, keys, limits = action_args
            for seq, (action_id, spec) in enumerate(zip(job.action_ids, job.actions, strict=True)):
                job_ids.append(job.job_id)
                ids.append(action_id)
                seqs.append(seq)
                types.append(spec.type)
                queues.append(spec.queue)
                payloads.append(jsonutil.dumps_str(spec.payload))
                attempts.append(spec.max_attempts)
                timeouts.append(float(spec.timeout))
                keys.append(spec.concurrency_key)
                limits.append(spec.concurrency_limit)
            for first, queue, body in job.outbox:
                outbox_args[0].append(first)
                outbox_args[1].append(queue)
                outbox_args[2].append(body)
        async with self._driver() as db:
            rows = await db.fetch(q.PG_CREATE_JOBS, *job_args, *action_args, *outbox_args, hold)
        by_id = {row["id"]: row for row in rows}
        records = [_job_pg(by_id[job.job_id]) for job in jobs]
        held = next((list(row["outbox_ids"]) for row in rows if row["outbox_ids"] is not None), [])
        self._hand_over(handoff, held, [row for job in jobs for row in job.outbox])
        return records

    # --- relay --------------------------------------------------------------------------------------
    async def publish_outbox(self, limit: int, publish: Callable[[list[OutboxRow]], Awaitable[None]]) -> int:
        """Hand due outbox rows to ``publish``; delete them only once it returned (the broker confirmed).

        If ``publish`` raises, the transaction rolls back and the rows stay for the next try.
        Rows are locked with SKIP LOCKED so several relays never publish the same row at once.
        """
        if self._fast:
            async with self._driver() as db, db.transaction():
                taken = await db.fetch(q.PG_TAKE_DUE_OUTBOX, limit)
                if not taken:
                    return 0
                rows = sorted((OutboxRow(r["id"], r["queue"], r["body"]) for r in taken), key=lambda r: r.id)
                await publish(rows)
            return len(rows)
        async with self._tx() as conn:
            result = await conn.execute(q.SELECT_DUE_OUTBOX, {"p_limit": limit})
            rows = [OutboxRow(r.id, r.queue, bytes(r.body)) for r in result]
            if not rows:
                return 0
            await publish(rows)
            await conn.execute(q.DELETE_OUTBOX, {"p_ids": [r.id for r in rows]})
        return len(rows)

    async def delete_outbox_rows(self, ids: Sequence[int]) -> None:
        """Delete outbox rows whose messages were published (by the handoff; see ``create_job``)."""
        if self._fast:
            async with self._driver() as db:
                await db.execute("DELETE FROM jobyard_outbox WHERE id = ANY($1::bigint[])", list(ids))
            return
        async with self._tx() as conn:
            await conn.execute(q.DELETE_OUTBOX, {"p_ids": list(ids)})

    async def next_outbox_due(self) -> datetime | None:
        async with self._tx() as conn:
            return _utc((await conn.execute(q.NEXT_OUTBOX_DUE)).scalar())

    async def outbox_size(self) -> int:
        async with self._tx() as conn:
            return int((await conn.execute(q.COUNT_OUTBOX)).scalar() or 0)

    async def wait_for_outbox(self, timeout: float) -> bool:
        """Wait until something was written to the outbox (here or, on PostgreSQL, by any process)."""
        if self.dialect == "postgresql" and self._listener is None:
            await self._start_listener()
        try:
            await asyncio.wait_for(self._outbox_event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._outbox_event.clear()

    async def _start_listener(self) -> None:
        dsn = self._dsn()
        try:
            conn = await asyncpg.connect(dsn, server_settings=server_settings(dsn))
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot LISTEN for outbox writes (%s); polling instead", exc)
            return
        try:
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._outbox_event.set())
        except BaseException as exc:  # failed or cancelled half way: never leave the connection open
            conn.terminate()
            if isinstance(exc, OSError | asyncpg.PostgresError):
                log.warning("cannot LISTEN for outbox writes (%s); polling instead", exc)
                return
            raise
        self._listener = conn
        conn.add_termination_listener(self._on_listener_lost)

    def _on_listener_lost(self, *_: Any) -> None:
        self._listener = None
        self._outbox_event.set()

    # --- claims -------------------------------------------------------------------------------------
    async def claim_actions(self, ids: Sequence[UUID], *, worker_id: str, lease: float) -> list[ClaimedAction]:
        """Move the given actions to ``running`` if they are still claimable; the rest are duplicates."""
        if not ids:
            return []
        if self._fast:
            async with self._driver() as db:
                return [_claimed_pg(r) for r in await db.fetch(q.PG_CLAIM_ACTIONS, list(ids), worker_id, lease)]
        async with self._tx() as conn:
            rows = (
                await conn.execute(q.CLAIM_ACTIONS, {"p_ids": list(ids), "p_worker": worker_id, "p_lease": lease})
            ).all()
            claimed = [_claimed(r) for r in rows]
            if claimed:
                await conn.execute(q.MARK_JOBS_RUNNING, {"p_ids": list({c.job_id for c in claimed})})
        return claimed

    async def claim_due_actions(
        self, queues: Sequence[str], *, limit: int, worker_id: str, lease: float, due_for: float = 0.0
    ) -> list[ClaimedAction]:
        """Claim due actions straight from the store (SKIP LOCKED on PostgreSQL), oldest first.

        ``due_for`` > 0 takes only actions that have been due at least that many seconds: the sweep for
        messages that are late (parked at a stalled consumer, say) while the broker is otherwise fine.
        """
        params = {
            "p_queues": list(queues),
            "p_limit": limit,
            "p_worker": worker_id,
            "p_lease": lease,
            "p_offset": -max(0.0, due_for),
        }
        async with self._tx() as conn:
            rows = (await conn.execute(q.CLAIM_DUE_ACTIONS, params)).all()
            claimed = [_claimed(r) for r in rows]
            if claimed:
                await conn.execute(q.MARK_JOBS_RUNNING, {"p_ids": list({c.job_id for c in claimed})})
        return claimed

    async def claim_keyed_actions(
        self, items: Sequence[tuple[UUID, str]], *, worker_id: str, lease: float, defer: Callable[[], float]
    ) -> list[ClaimedAction]:
        """Claim actions that carry a concurrency key, each only while its key has room.

        An action whose key is full waits: its due time moves ``defer()`` seconds ahead with a new outbox row, so
        it neither blocks its queue nor uses an attempt. Claims are serialised per key (advisory lock on
        PostgreSQL, the single writer on SQLite), so no two workers can both take the last slot.
        """
        if not items:
            return []
        claimed: list[ClaimedAction] = []
        deferred = False
        async with self._tx() as conn:
            if self.dialect == "postgresql":
                for key in sorted({key for _, key in items}):  # one order everywhere: no deadlocks
                    await conn.execute(q.LOCK_CONCURRENCY_KEY, {"p_key": key})
            for action_id, _key in items:
                row = (
                    await conn.execute(
                        q.CLAIM_KEYED_ACTION, {"p_id": action_id, "p_worker": worker_id, "p_lease": lease}
                    )
                ).first()
                if row is not None:
                    claimed.append(_claimed(row))
                    continue
                waiting = (await conn.execute(q.DEFER_ACTION, {"p_id": action_id, "p_delay": defer()})).first()
                if waiting is not None:  # claimable but its key is full (else: a duplicate, nothing to do)
                    await conn.execute(
                        q.INSERT_RETRY_OUTBOX,
                        {
                            "p_id": action_id,
                            "p_queue": waiting.queue,
                            "p_body": messages.encode_claimed(_claimed(waiting)),
                            "p_available_at": waiting.available_at,
                        },
                    )
                    deferred = True
            if claimed:
                await conn.execute(q.MARK_JOBS_RUNNING, {"p_ids": list({c.job_id for c in claimed})})
        if deferred:
            self._outbox_event.set()
        return claimed

    async def due_keyed_actions(
        self, queues: Sequence[str], *, limit: int, due_for: float = 0.0
    ) -> list[tuple[UUID, str]]:
        """Due actions with a concurrency key, for the store-polling path (claimed via claim_keyed_actions)."""
        params = {"p_queues": list(queues), "p_limit": limit, "p_offset": -max(0.0, due_for)}
        async with self._tx() as conn:
            return [(r.id, r.concurrency_key) for r in await conn.execute(q.SELECT_DUE_KEYED_IDS, params)]

    async def extend_leases(self, held: Sequence[tuple[UUID, int]], lease: float) -> set[UUID]:
        """Heartbeat: extend the leases still held; returns the ids whose lease was extended."""
        kept: set[UUID] = set()
        if not held:
            return kept
        # Each lease in a transaction of its own: the heartbeat then never holds one action's row while it waits
        # for another's. In one transaction it could hold a row a completion waited for while it waited for one
        # that completion held (a completion locks its rows in whatever order its plan meets them), a deadlock
        # PostgreSQL breaks only after deadlock_timeout (1 s). A heartbeat is a few dozen rows every few seconds.
        for action_id, attempt in sorted(held):
            async with self._tx() as conn:
                row = (
                    await conn.execute(q.EXTEND_LEASE, {"p_id": action_id, "p_attempt": attempt, "p_lease": lease})
                ).first()
            if row is not None:
                kept.add(row.id)
        return kept

    async def update_progress(self, action_id: UUID, attempt: int, fraction: float, message: str | None) -> bool:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    q.UPDATE_PROGRESS,
                    {"p_id": action_id, "p_attempt": attempt, "p_progress": fraction, "p_message": message},
                )
            ).first()
        return row is not None

    # --- completion ---------------------------------------------------------------------------------
    async def complete_actions(self, outcomes: Sequence[Outcome]) -> list[Completion]:
        """Record outcomes, fenced on each attempt, and update the jobs' counters in the same transaction.

        An outcome whose attempt no longer holds the action (a stale or duplicate writer) changes nothing and
        is left out of the returned completions. Counters move only with an accepted transition, so a job's
        fan-in counts each action exactly once.
        """
        if not outcomes:
            return []
        # A hand-back at shutdown (RELEASE) is rare and changes the attempt budget: the portable path handles it.
        if self._fast and not any(o.kind is OutcomeKind.RELEASE for o in outcomes):
            return await self._complete_actions_pg(outcomes)
        accepted: list[Completion] = []
        delta: dict[UUID, list[int]] = defaultdict(lambda: [0, 0, 0])
        failed: list[tuple[UUID, UUID, str, str | None]] = []  # action, job, type, error: action.failed events
        wrote_outbox = False
        async with self._tx() as conn:
            for outcome in outcomes:
                params: dict[str, Any] = {"p_id": outcome.action_id, "p_attempt": outcome.attempt}
                kind = outcome.kind
                if kind is OutcomeKind.SUCCEEDED:
                    params["p_result"] = outcome.result_summary
                elif kind in _REQUEUES:
                    params["p_error"] = outcome.error
                    params["p_delay"] = max(0.0, outcome.retry_in)
                else:
                    params["p_error"] = outcome.error
                row = (await conn.execute(_COMPLETE_STATEMENT[kind], params)).first()
                if row is None:
                    log.warning(
                        "stale completion rejected by the fence: action %s attempt %d (%s) no longer holds the action",
                        outcome.action_id,
                        outcome.attempt,
                        kind.value,
                    )
                    continue
                if kind in _REQUEUES:
                    if outcome.message_body is None:
                        raise StoreError("a retry outcome needs the message body to re-enqueue")
                    await conn.execute(
                        q.INSERT_RETRY_OUTBOX,
                        {
                            "p_id": outcome.action_id,
                            "p_queue": outcome.queue,
                            "p_body": outcome.message_body,
                            "p_available_at": row.available_at,
                        },
                    )
                    wrote_outbox = True
                else:
                    counters = delta[row.job_id]
                    counters[{"succeeded": 0, "failed": 1, "cancelled": 2}[_FINAL_STATUS[kind].value]] += 1
                    if kind is OutcomeKind.FAILED:
                        failed.append((outcome.action_id, row.job_id, row.type, outcome.error))
                accepted.append(Completion(outcome.action_id, row.job_id, _FINAL_STATUS[kind]))
            job_state = await self._add_to_job_counters(conn, delta, failed)
        for completion in accepted:
            state = job_state.get(completion.job_id)
            if state is not None:
                completion.job_status, completion.job_finished = state
        if wrote_outbox:
            self._outbox_event.set()
        return accepted

    async def _add_to_job_counters(
        self,
        conn: AsyncConnection,
        delta: dict[UUID, list[int]],
        failed: Sequence[tuple[UUID, UUID, str, str | None]] = (),
    ) -> dict[UUID, tuple[JobStatus, bool]]:
        """Move the jobs' counters and write their domain events in order: action.failed, job.ready, job.completed.

        (The portable twin of the counting part of ``q.PG_COMPLETE_ACTIONS``.)
        """
        job_state: dict[UUID, tuple[JobStatus, bool]] = {}
        if not delta:
            return job_state
        unready = {r.id for r in await conn.execute(q.SELECT_UNREADY_JOBS, {"p_ids": sorted(delta)})}
        tenants: dict[UUID, str] = {}
        closing: list[dict[str, Any]] = []
        for job_id, (s, f, c) in sorted(delta.items()):
            jrow = (
                await conn.execute(
                    q.ADD_TO_JOB_COUNTERS, {"p_job_id": job_id, "p_succeeded": s, "p_failed": f, "p_cancelled": c}
                )
            ).one()
            tenants[job_id] = jrow.tenant_id
            done = jrow.succeeded + jrow.failed + jrow.cancelled
            finished = done >= jrow.total
            job_state[job_id] = (JobStatus(jrow.status), finished)
            if finished and done - (s + f + c) < jrow.total:
                if job_id in unready and jrow.status != JobStatus.CANCELLED.value:
                    closing.append(
                        ev.event_values(ev.JOB_READY, jrow.tenant_id, job_id, ev.job_ready(job_id, jrow.total))
                    )
                data = ev.job_completed(job_id, jrow.status, jrow.total, jrow.succeeded, jrow.failed, jrow.cancelled)
                closing.append(ev.event_values(ev.JOB_COMPLETED, jrow.tenant_id, job_id, data))
        rows = [
            ev.event_values(ev.ACTION_FAILED, tenants[job], job, ev.action_failed(job, action, type_, error), action)
            for action, job, type_, error in failed
        ]
        rows.extend(closing)
        if rows:
            await conn.execute(q.INSERT_EVENTS.values(created_at=db_now()), rows)
        return job_state

    async def _complete_actions_pg(self, outcomes: Sequence[Outcome]) -> list[Completion]:
        """The whole batch in one statement (see ``q.PG_COMPLETE_ACTIONS``): one round trip per batch."""
        first: dict[UUID, Outcome] = {}
        for outcome in outcomes:
            # One transition per action per batch; a second outcome for it would be refused by the fence anyway.
            first.setdefault(outcome.action_id, outcome)
        ids, attempts, statuses, results, errors, delays, queues, bodies = [], [], [], [], [], [], [], []
        for outcome in first.values():
            kind = outcome.kind
            if kind is OutcomeKind.RETRY and outcome.message_body is None:
                raise StoreError("a retry outcome needs the message body to re-enqueue")
            ids.append(outcome.action_id)
            attempts.append(outcome.attempt)
            statuses.append(_FINAL_STATUS[kind].value)
            results.append(jsonutil.dumps_str(outcome.result_summary) if kind is OutcomeKind.SUCCEEDED else None)
            errors.append(outcome.error)
            delays.append(max(0.0, outcome.retry_in))
            queues.append(outcome.queue)
            bodies.append(outcome.message_body)
        async with self._driver() as db:
            rows = await db.fetch(
                q.PG_COMPLETE_ACTIONS, ids, attempts, statuses, results, errors, delays, queues, bodies
            )
        by_id = {r["id"]: r for r in rows}
        accepted: list[Completion] = []
        wrote_outbox = False
        for outcome in outcomes:
            row = by_id.pop(outcome.action_id, None)
            if row is None:
                log.warning(
                    "stale completion rejected by the fence: action %s attempt %d (%s) no longer holds the action",
                    outcome.action_id,
                    outcome.attempt,
                    outcome.kind.value,
                )
                continue
            status = ActionStatus(row["status"])
            wrote_outbox = wrote_outbox or status is ActionStatus.RETRYING
            completion = Completion(outcome.action_id, row["job_id"], status)
            if row["job_status"] is not None:
                completion.job_status = JobStatus(row["job_status"])
                completion.job_finished = bool(row["job_finished"])
            accepted.append(completion)
        if wrote_outbox:
            self._outbox_event.set()
        return accepted

    async def cancelled_among(self, action_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these (running) actions belong to a job that was cancelled."""
        if not action_ids:
            return set()
        async with self._tx() as conn:
            return {r.id for r in await conn.execute(q.SELECT_CANCELLED_AMONG, {"p_ids": list(action_ids)})}

    async def cancel_job(self, tenant_id: str, job_id: UUID, *, audit: AuditEntry | None = None) -> CancelResult:
        """Cancel a pending or running job: waiting actions at once; running ones are left to their workers.

        Raises ``NotFound`` for an unknown job and ``Conflict`` for a job that is already final. With ``audit``,
        the cancellation is recorded in the same transaction.
        """
        async with self._tx() as conn:
            if (await conn.execute(q.CANCEL_JOB, {"p_id": job_id, "p_tenant": tenant_id})).first() is None:
                job = (await conn.execute(q.SELECT_JOB, {"p_id": job_id, "p_tenant": tenant_id})).first()
                if job is None:
                    raise NotFound(f"job {job_id} not found")
                raise Conflict(f"job {job_id} is already {job.status}; only pending or running jobs can be cancelled")
            cancelled = [r.id for r in await conn.execute(q.CANCEL_WAITING_ACTIONS, {"p_id": job_id})]
            running = [r.id for r in await conn.execute(q.SELECT_RUNNING_ACTION_IDS, {"p_id": job_id})]
            if cancelled:
                await conn.execute(q.DELETE_OUTBOX_FOR_ACTIONS, {"p_ids": cancelled})
            await self._add_to_job_counters(conn, {job_id: [0, 0, len(cancelled)]})
            if audit is not None:
                await conn.execute(q.INSERT_AUDIT, _audit_row(audit, str(job_id)))
        return CancelResult(job_id, cancelled, running)

    async def requeue_failed(
        self, tenant_id: str, action_id: UUID, *, extra_attempts: int, audit: AuditEntry | None = None
    ) -> ClaimedAction:
        """Give a failed action ``extra_attempts`` more attempts and queue it again (retry and replay).

        The attempt number never goes back (it is the fencing token); the budget grows instead.
        """
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    q.REQUEUE_FAILED_ACTION,
                    {"p_id": action_id, "p_tenant": tenant_id, "p_extra_attempts": extra_attempts},
                )
            ).first()
            if row is None:
                state = (await conn.execute(q.SELECT_ACTION_STATE, {"p_id": action_id, "p_tenant": tenant_id})).first()
                if state is None:
                    raise NotFound(f"action {action_id} not found")
                if state.job_status == JobStatus.CANCELLED.value:
                    raise Conflict(f"the job of action {action_id} was cancelled; its actions cannot run again")
                raise Conflict(f"action {action_id} is {state.status}; only failed actions can be retried or replayed")
            action = _claimed(row)
            await conn.execute(q.REOPEN_JOB, {"p_job_id": action.job_id})
            if audit is not None:
                await conn.execute(q.INSERT_AUDIT, _audit_row(audit, str(action_id)))
            body = messages.encode_claimed(action)
            await conn.execute(q.INSERT_OUTBOX.values(available_at=db_now()), [
                {"action_id": action.id, "queue": action.queue, "body": body}
            ])  # fmt: skip
            if self.dialect == "postgresql":
                await conn.execute(q.PG_NOTIFY_OUTBOX)
        self._outbox_event.set()
        return action

    # --- leadership ---------------------------------------------------------------------------------
    async def acquire_leadership(self, name: str) -> Leadership | None:
        """Try to become the leader for ``name`` (reaper, scheduler); None if another process is.

        PostgreSQL: a session advisory lock held on a dedicated connection for as long as we lead; it is released
        by the server the moment that connection dies. SQLite: one process owns the file, so it always leads.
        """
        if self.dialect != "postgresql":
            return Leadership(None)
        import asyncpg

        dsn = self._dsn()
        key = int.from_bytes(hashlib.sha256(f"jobyard:leader:{name}".encode()).digest()[:8], "big", signed=True)
        try:
            conn = await asyncpg.connect(dsn, timeout=5, server_settings=server_settings(dsn))
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return Leadership(conn)
        except (OSError, asyncpg.PostgresError) as exc:
            await conn.close(timeout=2)
            raise StoreUnavailable(_UNAVAILABLE_HINT) from exc
        except BaseException:  # cancelled (shutdown) between connecting and asking: do not leak the connection
            conn.terminate()
            raise
        await conn.close(timeout=2)
        return None

    # --- locks --------------------------------------------------------------------------------------
    async def take_lock(self, name: str, holder: str, ttl: float) -> int | None:
        """The store-held lock (used while Redis is down): its fence if taken, None if someone holds it."""
        async with self._tx() as conn:
            row = (
                await conn.execute(q.take_lock(self.dialect), {"p_name": name, "p_holder": holder, "p_ttl": ttl})
            ).first()
        return None if row is None else int(row.fence)

    async def next_fence(self, name: str) -> int:
        async with self._tx() as conn:
            return int((await conn.execute(q.next_fence(self.dialect), {"p_name": name})).scalar_one())

    async def extend_lock(self, name: str, holder: str, ttl: float) -> bool:
        async with self._tx() as conn:
            row = (await conn.execute(q.EXTEND_LOCK, {"p_name": name, "p_holder": holder, "p_ttl": ttl})).first()
        return row is not None

    async def release_lock(self, name: str, holder: str) -> None:
        async with self._tx() as conn:
            await conn.execute(q.RELEASE_LOCK, {"p_name": name, "p_holder": holder})

    async def prune_expired_dedup_keys(self) -> int:
        async with self._tx() as conn:
            return (await conn.execute(q.PRUNE_EXPIRED_DEDUP)).rowcount or 0

    async def expired_leases(self, limit: int) -> list[ClaimedAction]:
        async with self._tx() as conn:
            return [_claimed(r) for r in await conn.execute(q.SELECT_EXPIRED_LEASES, {"p_limit": limit})]

    # --- API keys -----------------------------------------------------------------------------------
    async def create_api_key(
        self,
        *,
        tenant_id: str,
        name: str | None,
        prefix: str,
        key_hash: str,
        scopes: Sequence[str],
        audit: AuditEntry | None = None,
    ) -> ApiKeyRecord:
        """Store a new key (its hash only); with ``audit``, record the creation in the same transaction."""
        key_id = uuid7()
        values = {
            "id": key_id,
            "tenant_id": tenant_id,
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "scopes": " ".join(scopes),
        }
        async with self._tx() as conn:
            row = (await conn.execute(q.INSERT_API_KEY, values)).one()
            if audit is not None:
                await conn.execute(q.INSERT_AUDIT, _audit_row(audit, str(key_id)))
        return _api_key(row)

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_API_KEY_BY_PREFIX, {"p_prefix": prefix})).first()
        return _api_key(row) if row is not None else None

    async def list_api_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        """Every key (revoked ones too), or only one tenant's."""
        params = {"p_tenant": tenant_id} if tenant_id is not None else {}
        async with self._tx() as conn:
            rows = await conn.execute(q.list_api_keys(with_tenant=tenant_id is not None), params)
            return [_api_key(r) for r in rows]

    async def any_active_api_key(self) -> bool:
        async with self._tx() as conn:
            return (await conn.execute(q.SELECT_ANY_ACTIVE_API_KEY)).first() is not None

    async def find_api_key(self, ref: str, *, tenant_id: str | None = None) -> ApiKeyRecord | None:
        """A key by its id or its prefix (only a tenant's with ``tenant_id``)."""
        async with self._tx() as conn:
            row = await self._find_api_key(conn, ref, tenant_id)
        return _api_key(row) if row is not None else None

    async def _find_api_key(self, conn: AsyncConnection, ref: str, tenant_id: str | None) -> Any:
        try:
            by_id: UUID | None = UUID(ref)
        except ValueError:
            by_id = None
        params: dict[str, Any] = {"p_id": by_id, "p_ref": ref}
        if tenant_id is not None:
            params["p_tenant"] = tenant_id
        return (await conn.execute(q.select_api_key(with_tenant=tenant_id is not None), params)).first()

    async def revoke_api_key(
        self, ref: str, *, tenant_id: str | None = None, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        """Revoke a key given its id or its prefix (only a tenant's with ``tenant_id``); returns it, revoked.

        Raises ``NotFound`` for an unknown key and ``Conflict`` for one already revoked.
        """
        async with self._tx() as conn:
            found = await self._find_api_key(conn, ref, tenant_id)
            if found is None:
                raise NotFound(f"API key {ref} not found")
            row = (await conn.execute(q.REVOKE_API_KEY, {"p_id": found.id})).first()
            if row is None:
                raise Conflict(f"API key {ref} is already revoked")
            if audit is not None:
                await conn.execute(q.INSERT_AUDIT, _audit_row(audit, str(found.id)))
        return _api_key(row)

    # --- audit log ----------------------------------------------------------------------------------
    async def record_audit(self, entry: AuditEntry, *, connection: AsyncConnection | None = None) -> None:
        """Append one line to the audit log; pass ``connection`` to write it in the caller's transaction."""
        if connection is not None:
            async with translate_errors():
                await connection.execute(q.INSERT_AUDIT, _audit_row(entry))
            return
        async with self._tx() as conn:
            await conn.execute(q.INSERT_AUDIT, _audit_row(entry))

    async def list_audit(
        self, tenant_id: str, *, before: int | None = None, limit: int = 100, action: str | None = None
    ) -> list[AuditRecord]:
        """A tenant's audit log, newest first; ``before`` is the id of the last line of the previous page."""
        stmt = q.list_audit(with_cursor=before is not None, with_action=action is not None)
        params: dict[str, Any] = {"p_tenant": tenant_id, "p_limit": limit}
        if before is not None:
            params["p_before"] = before
        if action is not None:
            params["p_action"] = action
        async with self._tx() as conn:
            return [
                AuditRecord(
                    id=int(r.id),
                    tenant_id=r.tenant_id,
                    at=_utc(r.at),  # type: ignore[arg-type]
                    actor_key_id=r.actor_key_id,
                    actor=r.actor,
                    action=r.action,
                    target=r.target,
                    details=r.details,
                )
                for r in await conn.execute(stmt, params)
            ]

    # --- reads --------------------------------------------------------------------------------------
    async def count_waiting_actions(self, tenant_id: str) -> int:
        """A tenant's actions waiting to run (queued or retrying), for the queued-actions quota."""
        async with self._tx() as conn:
            return int((await conn.execute(q.COUNT_WAITING_ACTIONS, {"p_tenant": tenant_id})).scalar() or 0)

    async def get_job(self, tenant_id: str, job_id: UUID) -> JobRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_JOB, {"p_id": job_id, "p_tenant": tenant_id})).first()
        return _job(row) if row is not None else None

    async def get_job_with_actions(self, tenant_id: str, job_id: UUID) -> tuple[JobRecord, list[ActionRecord]] | None:
        if self._fast:
            async with self._driver() as db:
                rows = await db.fetch(q.PG_SELECT_JOB_WITH_ACTIONS, job_id, tenant_id)
            if not rows:
                return None
            return _job_pg(rows[0]), [_joined_action(job_id, r) for r in rows if r["a_id"] is not None]
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_JOB, {"p_id": job_id, "p_tenant": tenant_id})).first()
            if row is None:
                return None
            acts = [_action(r) for r in await conn.execute(q.SELECT_JOB_ACTIONS, {"p_id": job_id})]
        return _job(row), acts

    async def list_jobs(
        self, tenant_id: str, *, status: str | None, before: UUID | None, limit: int, name: str | None = None
    ) -> list[JobRecord]:
        stmt = q.list_jobs(with_status=status is not None, with_cursor=before is not None, with_name=bool(name))
        params: dict[str, Any] = {"p_tenant": tenant_id, "p_limit": limit}
        if name:
            # A search box, not a pattern language: drop the wildcards (a stray ``_`` matching one char is harmless).
            params["p_name_like"] = "%" + name.replace("\\", "").replace("%", "") + "%"
        if status is not None:
            params["p_status"] = status
        if before is not None:
            params["p_before"] = before
        async with self._tx() as conn:
            return [_job(r) for r in await conn.execute(stmt, params)]

    async def actions_changed_since(self, job_id: UUID, since: datetime) -> list[tuple[ActionRecord, datetime]]:
        """A job's actions written at or after ``since`` (database clock), oldest change first, with that time.

        Callers check the job's tenant first (``get_job``); this read is what resumes a live stream.
        """
        async with self._tx() as conn:
            rows = await conn.execute(q.SELECT_ACTIONS_CHANGED_SINCE, {"p_id": job_id, "p_since": since})
            return [(_action(r), _utc(r.updated_at)) for r in rows]  # type: ignore[misc]

    async def job_tenants(self, job_ids: Sequence[UUID]) -> dict[UUID, str]:
        """Which tenant owns each of these jobs (unknown ids are left out)."""
        if not job_ids:
            return {}
        async with self._tx() as conn:
            return {r.id: r.tenant_id for r in await conn.execute(q.SELECT_JOB_TENANTS, {"p_ids": list(job_ids)})}

    async def count_jobs_by_status(self, tenant_id: str) -> dict[str, int]:
        async with self._tx() as conn:
            rows = await conn.execute(q.COUNT_JOBS_BY_STATUS, {"p_tenant": tenant_id})
            return {r.status: int(r.n) for r in rows}

    async def get_action(self, tenant_id: str, action_id: UUID) -> ActionRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_ACTION, {"p_id": action_id, "p_tenant": tenant_id})).first()
        return _action(row) if row is not None else None

    async def list_dead_letters(
        self,
        tenant_id: str,
        *,
        queue: str | None = None,
        type_: str | None = None,
        before: UUID | None = None,
        limit: int = 100,
    ) -> list[ActionRecord]:
        stmt = q.list_dead_letters(
            with_queue=queue is not None, with_type=type_ is not None, with_cursor=before is not None
        )
        params: dict[str, Any] = {"p_tenant": tenant_id, "p_limit": limit}
        if queue is not None:
            params["p_queue"] = queue
        if type_ is not None:
            params["p_type"] = type_
        if before is not None:
            params["p_before"] = before
        async with self._tx() as conn:
            return [_action(r) for r in await conn.execute(stmt, params)]

    # --- domain events ------------------------------------------------------------------------------
    async def dispatch_events(self, limit: int, publish: Callable[[list[ev.EventRow]], Awaitable[None]]) -> int:
        """Hand a batch of event rows to ``publish`` (the broker, with confirms), then, in the same transaction,
        turn them into webhook deliveries and delete them. If ``publish`` raises, the rows stay for the next try.
        """
        if self._fast:
            return await self._dispatch_events_pg(limit, publish)
        async with self._tx() as conn:
            rows = [
                ev.EventRow(r.id, r.event_id, r.type, r.tenant_id, r.job_id, r.action_id, r.data, _utc(r.created_at))  # type: ignore[arg-type]
                for r in await conn.execute(q.SELECT_EVENTS, {"p_limit": limit})
            ]
            if not rows:
                return 0
            await publish(rows)
            tenants = sorted({r.tenant_id for r in rows})
            targets = [
                ev.WebhookTarget(w.id, w.tenant_id, w.url, list(w.events or []))
                for w in await conn.execute(q.SELECT_SUBSCRIBED_WEBHOOKS, {"p_tenants": tenants})
            ]
            completed = [r.job_id for r in rows if r.type == ev.JOB_COMPLETED]
            job_urls: dict[UUID, str] = {}
            if completed:
                result = await conn.execute(q.SELECT_JOB_WEBHOOK_URLS, {"p_ids": completed})
                job_urls = {r.id: r.webhook_url for r in result}
            deliveries = ev.plan_deliveries(rows, targets, job_urls)
            if deliveries:
                now = db_now()
                await conn.execute(
                    q.INSERT_DELIVERIES.values(next_attempt_at=now, created_at=now, updated_at=now), deliveries
                )
            await conn.execute(q.DELETE_EVENTS, {"p_ids": [r.id for r in rows]})
        return len(rows)

    async def _dispatch_events_pg(self, limit: int, publish: Callable[[list[ev.EventRow]], Awaitable[None]]) -> int:
        """``dispatch_events`` on the hot path: the rows taken out and their jobs' URLs in one statement.

        The relay's profile showed SQLAlchemy rendering each id of the IN lists of the portable path into the
        statement's text (about 6 % of the relay's CPU); here every list is one array parameter of a prepared
        statement.
        """
        async with self._driver() as db, db.transaction():
            taken = sorted(await db.fetch(q.PG_TAKE_EVENTS, limit), key=lambda r: r["id"])
            if not taken:
                return 0
            rows = [
                ev.EventRow(
                    r["id"], r["event_id"], r["type"], r["tenant_id"], r["job_id"], r["action_id"], r["data"],
                    _utc(r["created_at"]),  # type: ignore[arg-type]
                )
                for r in taken
            ]  # fmt: skip
            await publish(rows)
            tenants = sorted({r.tenant_id for r in rows})
            targets = [
                ev.WebhookTarget(w["id"], w["tenant_id"], w["url"], list(w["events"] or []))
                for w in await db.fetch(q.PG_SUBSCRIBED_WEBHOOKS, tenants)
            ]
            job_urls = {r["job_id"]: r["webhook_url"] for r in taken if r["webhook_url"] is not None}
            deliveries = ev.plan_deliveries(rows, targets, job_urls)
            if deliveries:
                columns = ("id", "tenant_id", "webhook_id", "event_id", "event_type", "job_id", "url", "body")
                await db.execute(q.PG_INSERT_DELIVERIES, *([d[c] for d in deliveries] for c in columns))
        return len(rows)

    async def mark_ready_jobs(self, limit: int = 500) -> int:
        """The job.ready sweep: jobs whose every action's first message has left the outbox become ready."""
        async with self._tx() as conn:
            ids = [r.id for r in await conn.execute(q.SELECT_NEWLY_READY_JOBS, {"p_limit": limit})]
            if not ids:
                return 0
            marked = (await conn.execute(q.MARK_JOBS_READY, {"p_ids": ids})).all()
            rows = [
                ev.event_values(ev.JOB_READY, r.tenant_id, r.id, ev.job_ready(r.id, r.total))
                for r in marked
                if r.status != JobStatus.CANCELLED.value
            ]
            if rows:
                await conn.execute(q.INSERT_EVENTS.values(created_at=db_now()), rows)
        return len(rows)

    async def backlogs(self) -> dict[str, tuple[int, datetime | None]]:
        """Rows waiting (and the oldest one's time) in the action outbox (due rows only) and the event outbox."""
        async with self._tx() as conn:
            outbox_n, outbox_oldest = (await conn.execute(q.OUTBOX_BACKLOG)).one()
            events_n, events_oldest = (await conn.execute(q.EVENTS_BACKLOG)).one()
        return {"outbox": (int(outbox_n), _utc(outbox_oldest)), "events": (int(events_n), _utc(events_oldest))}

    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Jobs by status and open (plus dead-lettered) actions by status, over every tenant; for /metrics."""
        async with self._tx() as conn:
            jobs = {r.status: int(r.n) for r in await conn.execute(q.COUNT_ALL_JOBS_BY_STATUS)}
            acts = {r.status: int(r.n) for r in await conn.execute(q.COUNT_OPEN_ACTIONS)}
            deliveries = {r.status: int(r.n) for r in await conn.execute(q.COUNT_DELIVERIES_BY_STATUS)}
        return {"jobs": jobs, "actions": acts, "webhook_deliveries": deliveries}

    # --- schedules ----------------------------------------------------------------------------------
    async def create_schedule(self, values: dict[str, Any]) -> ScheduleRecord:
        async with self._tx() as conn:
            return _schedule((await conn.execute(q.INSERT_SCHEDULE, [values])).one())

    async def get_schedule(self, tenant_id: str, schedule_id: UUID) -> ScheduleRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_SCHEDULE, {"p_id": schedule_id, "p_tenant": tenant_id})).first()
        return _schedule(row) if row is not None else None

    async def list_schedules(self, tenant_id: str, limit: int = 500) -> list[ScheduleRecord]:
        async with self._tx() as conn:
            return [
                _schedule(r) for r in await conn.execute(q.LIST_SCHEDULES, {"p_tenant": tenant_id, "p_limit": limit})
            ]

    async def set_schedule_paused(
        self, tenant_id: str, schedule_id: UUID, paused: bool, next_fire_at: datetime
    ) -> ScheduleRecord:
        params = {"p_id": schedule_id, "p_tenant": tenant_id, "p_paused": paused, "p_next": next_fire_at}
        async with self._tx() as conn:
            row = (await conn.execute(q.SET_SCHEDULE_PAUSED, params)).first()
        if row is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return _schedule(row)

    async def delete_schedule(self, tenant_id: str, schedule_id: UUID) -> None:
        async with self._tx() as conn:
            if (await conn.execute(q.DELETE_SCHEDULE, {"p_id": schedule_id, "p_tenant": tenant_id})).first() is None:
                raise NotFound(f"schedule {schedule_id} not found")

    async def schedule_fires(self, schedule_id: UUID, limit: int = 20) -> list[dict[str, Any]]:
        async with self._tx() as conn:
            rows = await conn.execute(q.LIST_SCHEDULE_FIRES, {"p_id": schedule_id, "p_limit": limit})
            return [
                {"fire_time": _utc(r.fire_time), "job_id": r.job_id, "error": r.error, "fired_at": _utc(r.fired_at)}
                for r in rows
            ]

    async def next_schedule_due(self) -> datetime | None:
        async with self._tx() as conn:
            return _utc((await conn.execute(q.NEXT_SCHEDULE_DUE)).scalar())

    async def fire_due_schedules(
        self, limit: int, fire: Callable[[ScheduleRecord], Awaitable[FireDecision]]
    ) -> list[FireOutcome]:
        """Fire the due schedules: ``fire`` decides each (fire time, job, next fire time); one transaction each.

        The fire row's primary key (schedule_id, fire_time) makes each fire time run at most once, whichever
        leader gets there, and the schedule only moves on from the due time it was read at.
        """
        async with self._tx() as conn:
            due = [_schedule(r) for r in await conn.execute(q.SELECT_DUE_SCHEDULES, {"p_limit": limit})]
        fired: list[FireOutcome] = []
        for schedule in due:
            decision = await fire(schedule)
            job_id: UUID | None = None
            async with self._tx() as conn:
                if decision.fire_time is not None:
                    planned = uuid7() if decision.job is not None else None
                    taken = await conn.execute(
                        q.insert_fire_unless_taken(self.dialect),
                        {"p_id": schedule.id, "p_fire_time": decision.fire_time, "p_job_id": planned,
                         "p_error": decision.error},
                    )  # fmt: skip
                    if taken.first() is not None and decision.job is not None:
                        job, _ = await self.create_job(
                            tenant_id=schedule.tenant_id,
                            name=decision.job.name,
                            metadata=decision.job.metadata,
                            actions=decision.job.actions,
                            connection=conn,
                            job_id=planned,
                        )
                        job_id = job.id
                await conn.execute(
                    q.ADVANCE_SCHEDULE,
                    {
                        "p_id": schedule.id,
                        "p_expected": schedule.next_fire_at,
                        "p_next": decision.next_fire_at,
                        "p_fired_at": decision.fire_time or schedule.last_fired_at,
                        "p_job_id": job_id or schedule.last_job_id,
                        "p_error": decision.error,
                    },
                )
            if job_id is not None:
                self._outbox_event.set()
            fired.append(FireOutcome(schedule, decision, job_id))
        return fired

    # --- webhooks -----------------------------------------------------------------------------------
    async def create_webhook(self, values: dict[str, Any]) -> dict[str, Any]:
        async with self._tx() as conn:
            return _webhook((await conn.execute(q.INSERT_WEBHOOK.values(created_at=db_now()), [values])).one())

    async def list_webhooks(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self._tx() as conn:
            return [_webhook(r) for r in await conn.execute(q.LIST_WEBHOOKS, {"p_tenant": tenant_id})]

    async def get_webhook(self, tenant_id: str, webhook_id: UUID) -> dict[str, Any]:
        async with self._tx() as conn:
            row = (await conn.execute(q.SELECT_WEBHOOK, {"p_id": webhook_id, "p_tenant": tenant_id})).first()
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return _webhook(row)

    async def set_webhook_active(self, tenant_id: str, webhook_id: UUID, active: bool) -> dict[str, Any]:
        params = {"p_id": webhook_id, "p_tenant": tenant_id, "p_active": active}
        async with self._tx() as conn:
            row = (await conn.execute(q.SET_WEBHOOK_ACTIVE, params)).first()
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return _webhook(row)

    async def delete_webhook(self, tenant_id: str, webhook_id: UUID) -> None:
        async with self._tx() as conn:
            if (await conn.execute(q.DELETE_WEBHOOK, {"p_id": webhook_id, "p_tenant": tenant_id})).first() is None:
                raise NotFound(f"webhook {webhook_id} not found")
            await conn.execute(q.END_DELETED_WEBHOOK_DELIVERIES, {"p_id": webhook_id})

    async def claim_due_deliveries(self, limit: int, lease: float) -> list[dict[str, Any]]:
        """Take due deliveries for one attempt each; their due time moves ``lease`` seconds ahead meanwhile.

        Each comes with its endpoint's signing secret (None for a job's own ``webhook_url``).
        """
        async with self._tx() as conn:
            rows = [
                dict(r._mapping)
                for r in await conn.execute(q.CLAIM_DUE_DELIVERIES, {"p_limit": limit, "p_lease": lease})
            ]
            hooks = sorted({r["webhook_id"] for r in rows if r["webhook_id"] is not None})
            secrets = {}
            if hooks:
                secrets = {r.id: r.secret for r in await conn.execute(q.SELECT_WEBHOOK_SECRETS, {"p_ids": hooks})}
        for row in rows:
            row["secret"] = secrets.get(row["webhook_id"]) if row["webhook_id"] is not None else None
            row["body"] = bytes(row["body"])
        return rows

    async def record_delivery(
        self, delivery_id: UUID, attempt: int, *, status: str, code: int | None, error: str | None, retry_in: float
    ) -> bool:
        params = {
            "p_id": delivery_id,
            "p_attempt": attempt,
            "p_status": status,
            "p_code": code,
            "p_error": error,
            "p_delay": retry_in,
        }
        async with self._tx() as conn:
            return bool((await conn.execute(q.RECORD_DELIVERY, params)).rowcount)

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        webhook_id: UUID | None = None,
        before: UUID | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        stmt = q.list_deliveries(
            with_status=status is not None, with_webhook=webhook_id is not None, with_cursor=before is not None
        )
        params: dict[str, Any] = {"p_tenant": tenant_id, "p_limit": limit}
        if status is not None:
            params["p_status"] = status
        if webhook_id is not None:
            params["p_webhook"] = webhook_id
        if before is not None:
            params["p_before"] = before
        async with self._tx() as conn:
            return [
                _aware_row(r, "next_attempt_at", "created_at", "updated_at") for r in await conn.execute(stmt, params)
            ]

    # --- retention ----------------------------------------------------------------------------------
    async def prune_finished(self, older_than: float, batch: int) -> dict[str, int]:
        """Delete one batch of jobs finished more than ``older_than`` seconds ago, with their actions, outbox,
        dedup keys, webhook deliveries and fire rows; then old deliveries and fire rows. Counts what went.
        """
        age = -older_than
        pruned = {"jobs": 0, "webhook_deliveries": 0, "schedule_fires": 0}
        async with self._tx() as conn:
            ids = [r.id for r in await conn.execute(q.SELECT_EXPIRED_JOBS, {"p_age": age, "p_limit": batch})]
            if ids:
                params = {"p_ids": ids}
                for statement in (
                    q.PRUNE_OUTBOX,
                    q.PRUNE_ACTIONS,
                    q.PRUNE_DEDUP,
                    q.PRUNE_JOB_DELIVERIES,
                    q.PRUNE_JOB_FIRES,
                ):
                    await conn.execute(statement, params)
                pruned["jobs"] = (await conn.execute(q.PRUNE_JOBS, params)).rowcount or 0
        async with self._tx() as conn:
            old = {"p_age": age, "p_limit": batch}
            pruned["webhook_deliveries"] = (await conn.execute(q.PRUNE_OLD_DELIVERIES, old)).rowcount or 0
            pruned["schedule_fires"] = (await conn.execute(q.PRUNE_OLD_FIRES, old)).rowcount or 0
        return pruned


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: hot-path statements leave no session state (no SET, LISTEN or advisory locks)."""


async def _init_driver_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as JSON text both ways: the hot path binds text it encoded with orjson, and decodes with it.
    await conn.set_type_codec("jsonb", encoder=str, decoder=jsonutil.loads, schema="pg_catalog", format="text")
    await conn.set_type_codec("json", encoder=str, decoder=jsonutil.loads, schema="pg_catalog", format="text")


def _json_from_db(value: Any) -> Any:
    # SQLite gives the JSON column NUMERIC affinity, so a bare number comes back already converted.
    if isinstance(value, int | float):
        return value
    return jsonutil.loads(value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status polls) run while a writer commits; NORMAL sync is durable in WAL mode
    # against process crashes, which is what embedded mode promises.
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=15000", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


async def _close_aiosqlite(connection: Any) -> None:
    closing = asyncio.ensure_future(connection.close())
    closing.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen, if nobody waits any more
    with contextlib.suppress(ValueError):  # aiosqlite's "Connection closed": it was stopped already
        await asyncio.shield(closing)


def _close_sqlite_connection_on_terminate(engine: AsyncEngine) -> None:
    """Close an invalidated aiosqlite connection with aiosqlite's own close() only, in a task of its own.

    SQLAlchemy terminates an invalidated async connection (a query whose task was cancelled, say) by running a
    graceful close under ``asyncio.shield`` and, when that wait is cancelled as well, by stopping aiosqlite's
    worker thread at once. With two stops queued, the shielded close (aiosqlite 0.22) waits for ever for the
    second, which the stopped thread never answers: if the event loop is shutting down at that moment, closing the
    loop hangs. aiosqlite's close() queues exactly one stop however it ends, so it is the only stop here; running
    it as its own task means a cancelled caller does not cut it short, and a loop shutting down waits for it rather
    than closing while the worker thread still has an answer to give it (which would fail in that thread).
    tests/unit/test_embedded_store_close.py reproduces each case. Outside a greenlet (a connection found by the
    garbage collector) there is nothing to await, and terminate() only stops the thread.
    """
    dialect = engine.sync_engine.dialect
    if not dialect.has_terminate:
        return

    def do_terminate(dbapi_connection: Any) -> None:
        if in_greenlet():
            dbapi_connection.run_async(_close_aiosqlite)
        else:
            dbapi_connection.terminate()

    dialect.do_terminate = do_terminate  # type: ignore[method-assign]


def create_repository(settings: Settings) -> Repository:
    url = database_url_for_driver(settings.database_url)
    serializer = jsonutil.dumps_str
    if url.startswith("sqlite"):
        engine = create_async_engine(url, json_serializer=serializer, json_deserializer=_json_from_db)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _close_sqlite_connection_on_terminate(engine)
    else:
        # SQLAlchemy hands URL query options to asyncpg.connect() as keywords, which has none named
        # application_name: a name given in the URL travels as a server setting instead.
        parsed = make_url(url)
        given = parsed.query.get("application_name")
        name = {"application_name": given if isinstance(given, str) else given[-1]} if given else {}
        engine = create_async_engine(
            parsed.difference_update_query(["application_name"]),
            json_serializer=serializer,
            json_deserializer=jsonutil.loads,
            # A fixed pool: overflow connections are closed on return, so a burst above the pool size paid a
            # connect (TLS negotiation, type introspection, cold statement cache) per request. Waiting a moment
            # for a pooled connection is far cheaper than that.
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_timeout=10,
            connect_args={"server_settings": name or server_settings(url)},
        )
    return Repository(
        engine, raw_url=settings.database_url, pool_size=settings.db_pool_size, message_actions=settings.message_actions
    )
