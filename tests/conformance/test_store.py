"""One store contract, run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy

from jobyard import messages
from jobyard.config import Settings
from jobyard.errors import StoreError
from jobyard.model import ActionSpecIn, ActionStatus, JobStatus, Outcome, OutcomeKind
from jobyard.store import Repository, create_repository
from jobyard.store.repository import NewJob, OutboxRow
from tests.conftest import _truncate


def specs(n: int, *, type_: str = "demo.noop", queue: str = "q", max_attempts: int = 3) -> list[ActionSpecIn]:
    return [ActionSpecIn(type_, queue, {"n": i}, max_attempts, 30.0) for i in range(n)]


async def drain_outbox(repo: Repository) -> list[OutboxRow]:
    seen: list[OutboxRow] = []

    async def publish(rows: list[OutboxRow]) -> None:
        seen.extend(rows)

    while await repo.publish_outbox(100, publish):
        pass
    return seen


def action_ids(row: OutboxRow) -> list[uuid.UUID]:
    """The actions of one outbox row: a whole message, or one action the relay packs with others."""
    body = row.body if messages.is_packed(row.body) else messages.pack([row.body])
    return [m.id for m in messages.unpack(body)]


async def test_create_job_writes_job_actions_and_outbox_together(repo: Repository) -> None:
    job, ids = await repo.create_job(tenant_id="t1", name="n", metadata={"k": "v"}, actions=specs(3))
    assert job.status is JobStatus.PENDING and job.total == 3 and job.metadata == {"k": "v"}
    found = await repo.get_job_with_actions("t1", job.id)
    assert found is not None
    _, actions = found
    assert [a.id for a in actions] == ids
    assert all(a.status is ActionStatus.QUEUED and a.attempt == 0 for a in actions)
    rows = await drain_outbox(repo)
    assert [r.queue for r in rows] == ["q"]  # one message of the job's three actions (JOBYARD_MESSAGE_ACTIONS)
    assert [m.id for m in messages.unpack(rows[0].body)] == ids
    assert await repo.outbox_size() == 0


async def test_a_jobs_actions_are_packed_per_queue_up_to_the_limit(repo: Repository) -> None:
    repo.message_actions = 2
    mixed = specs(3, queue="a") + specs(2, queue="b")
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=mixed)
    rows = await drain_outbox(repo)
    sent = {(r.queue, tuple(action_ids(r))) for r in rows}
    assert sent == {("a", (ids[0], ids[1])), ("a", (ids[2],)), ("b", (ids[3], ids[4]))}
    repo.message_actions = 1  # one row, one message per action
    _, one_each = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(3))
    rows = await drain_outbox(repo)
    assert not any(messages.is_packed(r.body) for r in rows)
    assert sorted(i for r in rows for i in action_ids(r)) == sorted(one_each)


async def test_concurrent_submissions_each_get_their_own_job_actions_events_and_audit(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    from jobyard.model import AuditEntry

    async def submit(i: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        job, ids = await repo.create_job(
            tenant_id=f"t{i % 2}", name=f"job-{i}", metadata={"i": i}, actions=specs(i % 3 + 1),
            audit=AuditEntry(f"t{i % 2}", "job.submitted", f"client-{i}") if i % 4 else None,
        )  # fmt: skip
        assert job.name == f"job-{i}" and job.metadata == {"i": i} and job.total == i % 3 + 1
        return job.id, ids

    runs_before = repo.job_inserts.runs
    made = await asyncio.gather(*(submit(i) for i in range(12)))
    for i, (job_id, ids) in enumerate(made):
        found = await repo.get_job_with_actions(f"t{i % 2}", job_id)
        assert found is not None
        job, actions = found
        assert job.name == f"job-{i}" and [a.id for a in actions] == ids
        assert [a.seq for a in actions] == list(range(len(ids)))
    sent = {}
    for row in await drain_outbox(repo):
        body = row.body if messages.is_packed(row.body) else messages.pack([row.body])
        sent.update({m.id: (m.job_id, m.payload) for m in messages.unpack(body)})
    assert sent == {a: (job_id, {"n": n}) for job_id, ids in made for n, a in enumerate(ids)}
    audited = [line.actor for t in ("t0", "t1") for line in await repo.list_audit(t)]
    assert sorted(audited) == sorted(f"client-{i}" for i in range(12) if i % 4)
    created: list[tuple[str, uuid.UUID, str]] = []

    async def publish(rows: list[Any]) -> None:
        created.extend((r.type, r.job_id, r.tenant_id) for r in rows)

    while await repo.dispatch_events(100, publish):
        pass
    assert sorted(created) == sorted(("job.created", job_id, f"t{i % 2}") for i, (job_id, _) in enumerate(made))
    if repo.dialect == "postgresql":  # the hot path writes submissions that arrive together in one statement
        assert repo.job_inserts.runs - runs_before < 12

        # one that cannot be stored fails alone; the ones written with it are stored
        async def bad() -> None:
            await repo.create_job(tenant_id="x" * 100, name=None, metadata={}, actions=specs(1))  # too long a tenant

        with caplog.at_level("INFO", logger="jobyard.store"):
            results = await asyncio.gather(bad(), submit(20), bad(), submit(21), return_exceptions=True)
        assert "a batch of 3 submissions failed" in caplog.text  # the last three went together, then one by one
        assert isinstance(results[0], StoreError) and isinstance(results[2], StoreError)
        for result in (results[1], results[3]):
            assert not isinstance(result, BaseException)
            assert await repo.get_job("t0", result[0]) is not None or await repo.get_job("t1", result[0]) is not None


async def test_a_batch_of_jobs_is_stored_whole_or_not_at_all_among_other_submissions(repo: Repository) -> None:
    def batch(sizes: list[int], *, tenant: str = "t0") -> list[NewJob]:
        return [NewJob(f"{tenant}-{i}", {"i": i}, specs(n)) for i, n in enumerate(sizes)]

    async def single(i: int) -> uuid.UUID:
        return (await repo.create_job(tenant_id="t1", name=f"single-{i}", metadata={}, actions=specs(1)))[0].id

    runs_before = repo.job_inserts.runs
    made = await asyncio.gather(
        single(0), repo.create_jobs(tenant_id="t0", jobs=batch([2, 1, 3])), single(1), single(2)
    )  # fmt: skip
    stored = made[1]
    assert [job.name for job, _ in stored] == ["t0-0", "t0-1", "t0-2"]  # in the order given
    for (job, ids), total in zip(stored, [2, 1, 3], strict=True):
        found = await repo.get_job_with_actions("t0", job.id)
        assert found is not None and found[0].total == total and [a.id for a in found[1]] == ids
    for job_id in (made[0], made[2], made[3]):
        assert await repo.get_job("t1", job_id) is not None
    if repo.dialect == "postgresql":  # the batch went through the group commit with the single submissions
        assert repo.job_inserts.runs - runs_before < 4

    # A batch the store refuses fails whole, and alone: what was written with it is stored.
    refused = batch([1, 1], tenant="t2")
    refused[1] = NewJob("t2-1", {}, [ActionSpecIn("demo.noop", None, None, 3, 30.0)])  # type: ignore[arg-type]
    results = await asyncio.gather(
        single(3), repo.create_jobs(tenant_id="t2", jobs=refused), single(4), return_exceptions=True
    )  # fmt: skip
    assert isinstance(results[1], StoreError)
    assert await repo.list_jobs("t2", status=None, before=None, limit=10) == []  # not even its first job
    for job_id in (results[0], results[2]):
        assert not isinstance(job_id, BaseException) and await repo.get_job("t1", job_id) is not None


@pytest.fixture
async def pg_repo(pg_database: str) -> AsyncIterator[Repository]:
    """The store on PostgreSQL only: row locks (SQLite has one writer at a time, so no two wait for each other)."""
    await _truncate(pg_database)
    repository = create_repository(Settings(database_url=pg_database))
    yield repository
    await repository.close()


@pytest.mark.integration
async def test_the_ready_sweep_never_waits_for_a_job_row_another_writer_holds(pg_repo: Repository) -> None:
    repo = pg_repo
    held, free = sorted([(await repo.create_job(tenant_id="t", name=None, metadata={}, actions=specs(1)))[0].id
                         for _ in range(2)])  # fmt: skip
    await drain_outbox(repo)  # both jobs' messages have left: both are ready to be marked
    async with repo.engine.connect() as other:  # a completion holding the first job's row (the order it locks in)
        await other.execute(
            sqlalchemy.text("SELECT id FROM jobyard_jobs WHERE id = :id FOR NO KEY UPDATE"), {"id": held}
        )
        # Waiting for that row (as the sweep did, in the plan's order, while the completion waited for a row the
        # sweep held) is how they deadlocked; now the sweep marks what it can and leaves the held job for later.
        assert await asyncio.wait_for(repo.mark_ready_jobs(), timeout=2.0) == 1
        await other.rollback()
    assert await repo.mark_ready_jobs() == 1  # the job skipped is marked by the next sweep
    published: list[tuple[str, uuid.UUID]] = []

    async def publish(rows: list[Any]) -> None:
        published.extend((r.type, r.job_id) for r in rows if r.type == "job.ready")

    while await repo.dispatch_events(100, publish):
        pass
    assert sorted(published) == [("job.ready", held), ("job.ready", free)]


@pytest.mark.integration
async def test_the_heartbeat_holds_no_action_row_while_it_waits_for_another(pg_repo: Repository) -> None:
    repo = pg_repo
    _, ids = await repo.create_job(tenant_id="t", name=None, metadata={}, actions=specs(3))
    await repo.claim_actions(ids, worker_id="w1", lease=30)
    held = [(action_id, 1) for action_id in ids]
    lock = sqlalchemy.text("SELECT id FROM jobyard_actions WHERE id = :id FOR NO KEY UPDATE NOWAIT")
    async with repo.engine.connect() as completion, repo.engine.connect() as other:
        waited_for = sorted(ids)[1]
        await completion.execute(lock, {"id": waited_for})  # a completion holding one of the worker's rows
        extending = asyncio.create_task(repo.extend_leases(held, 30))
        await asyncio.sleep(0.3)
        assert not extending.done()  # the heartbeat waits for that row
        # ...holding none of the others meanwhile (in one transaction it held those it had extended, which a
        # completion waiting in another order could need: a deadlock).
        for action_id in ids:
            if action_id != waited_for:
                await other.execute(lock, {"id": action_id})
        await other.rollback()
        await completion.rollback()
        assert await asyncio.wait_for(extending, timeout=5.0) == set(ids)


async def test_outbox_rows_stay_when_publishing_fails(repo: Repository) -> None:
    await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(2))

    async def failing(rows: list[OutboxRow]) -> None:
        raise RuntimeError("broker said no")

    with pytest.raises(RuntimeError):
        await repo.publish_outbox(10, failing)
    assert await repo.outbox_size() == 1  # the job's one message
    assert len(messages.unpack((await drain_outbox(repo))[0].body)) == 2


async def test_event_rows_stay_when_publishing_fails_and_go_out_in_order_after(repo: Repository) -> None:
    made = [(await repo.create_job(tenant_id=f"t{i}", name=None, metadata={}, actions=specs(1)))[0] for i in range(3)]

    async def failing(rows: list[Any]) -> None:
        raise RuntimeError("broker said no")

    with pytest.raises(RuntimeError):
        await repo.dispatch_events(10, failing)
    published: list[Any] = []

    async def publish(rows: list[Any]) -> None:
        published.extend(rows)

    assert await repo.dispatch_events(2, publish) == 2  # a batch is the oldest rows, in the order written
    assert await repo.dispatch_events(10, publish) == 1
    assert await repo.dispatch_events(10, publish) == 0
    assert [(r.type, r.job_id, r.tenant_id) for r in published] == [
        ("job.created", job.id, f"t{i}") for i, job in enumerate(made)
    ]
    assert [r.id for r in published] == sorted(r.id for r in published)
    assert published[0].data == {"job_id": str(made[0].id), "name": None, "status": "pending", "total": 1}
    assert all(r.created_at.tzinfo is not None for r in published)


async def test_claim_is_exclusive_and_bumps_the_attempt(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(2))
    first = await repo.claim_actions(ids, worker_id="w1", lease=30)
    assert {c.id for c in first} == set(ids) and all(c.attempt == 1 for c in first)
    assert await repo.claim_actions(ids, worker_id="w2", lease=30) == []
    job = await repo.get_job("t1", first[0].job_id)
    assert job is not None and job.status is JobStatus.RUNNING and job.started_at is not None


async def test_concurrent_claims_hand_each_action_to_one_claimer(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(20))
    results = await asyncio.gather(*(repo.claim_actions(ids, worker_id=f"w{i}", lease=30) for i in range(4)))
    claimed = [c.id for batch in results for c in batch]
    assert sorted(claimed) == sorted(ids)


async def test_completion_counts_each_action_once_and_finishes_the_job(repo: Repository) -> None:
    job, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(3))
    claimed = await repo.claim_actions(ids, worker_id="w", lease=30)
    outcomes = [Outcome(c.id, c.attempt, OutcomeKind.SUCCEEDED, result_summary={"ok": c.id.hex}) for c in claimed]
    first = await repo.complete_actions(outcomes[:2])
    assert all(not c.job_finished for c in first)
    again = await repo.complete_actions(outcomes[:2])  # a duplicate completion changes nothing
    assert again == []
    last = await repo.complete_actions(outcomes[2:])
    assert last[0].job_finished and last[0].job_status is JobStatus.SUCCEEDED
    final = await repo.get_job("t1", job.id)
    assert final is not None and final.succeeded == 3 and final.status is JobStatus.SUCCEEDED
    assert final.finished_at is not None


async def test_one_batch_of_mixed_outcomes_over_several_jobs_moves_each_counter_once(repo: Repository) -> None:
    job_a, ids_a = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(3))
    job_b, ids_b = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(2))
    claimed = {c.id: c for c in await repo.claim_actions(ids_a + ids_b, worker_id="w", lease=30)}
    a0, a1, a2 = (claimed[i] for i in ids_a)
    b0, b1 = (claimed[i] for i in ids_b)
    batch = [
        Outcome(a0.id, a0.attempt, OutcomeKind.SUCCEEDED, result_summary={"n": 0}),
        Outcome(a1.id, a1.attempt, OutcomeKind.FAILED, error="boom"),
        Outcome(a2.id, a2.attempt, OutcomeKind.RETRY, error="again", retry_in=60, queue="q", message_body=b"m"),
        Outcome(b0.id, b0.attempt, OutcomeKind.SUCCEEDED, result_summary=None),
        Outcome(b0.id, b0.attempt, OutcomeKind.SUCCEEDED, result_summary=None),  # a duplicate in the same batch
        Outcome(b1.id, b1.attempt + 1, OutcomeKind.SUCCEEDED, result_summary=1),  # a stale attempt
    ]
    accepted = await repo.complete_actions(batch)
    by_id = {c.action_id: c for c in accepted}
    assert set(by_id) == {a0.id, a1.id, a2.id, b0.id}
    assert by_id[a2.id].status is ActionStatus.RETRYING and by_id[a2.id].job_status is JobStatus.RUNNING
    assert by_id[b0.id].job_status is JobStatus.RUNNING and not by_id[b0.id].job_finished
    found_a = await repo.get_job_with_actions("t1", job_a.id)
    found_b = await repo.get_job_with_actions("t1", job_b.id)
    assert found_a is not None and found_b is not None
    (ja, acts_a), (jb, _) = found_a, found_b
    assert (ja.succeeded, ja.failed, ja.cancelled, ja.status) == (1, 1, 0, JobStatus.RUNNING)
    assert (jb.succeeded, jb.failed, jb.status) == (1, 0, JobStatus.RUNNING)
    assert [a.status for a in acts_a] == [ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.RETRYING]
    assert acts_a[0].result == {"n": 0} and acts_a[1].error == "boom" and acts_a[2].error == "again"
    assert await repo.outbox_size() == 2 + 1  # the two jobs' messages and the one retry
    (b1_done,) = await repo.complete_actions([Outcome(b1.id, b1.attempt, OutcomeKind.SUCCEEDED, result_summary=1)])
    assert b1_done.job_finished and b1_done.job_status is JobStatus.SUCCEEDED


async def test_concurrent_completions_of_one_job_count_every_action(repo: Repository) -> None:
    job, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(40))
    claimed = await repo.claim_actions(ids, worker_id="w", lease=30)
    outcomes = [Outcome(c.id, c.attempt, OutcomeKind.SUCCEEDED, result_summary=None) for c in claimed]
    batches = [outcomes[i::4] for i in range(4)]
    results = await asyncio.gather(*(repo.complete_actions(b) for b in batches))
    assert sum(len(r) for r in results) == 40
    assert sum(c.job_finished for r in results for c in r) >= 1
    final = await repo.get_job("t1", job.id)
    assert final is not None and final.succeeded == 40 and final.status is JobStatus.SUCCEEDED


async def test_a_stale_attempt_is_rejected_by_the_fence(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(1))
    (first,) = await repo.claim_actions(ids, worker_id="w1", lease=30)
    # The first worker's lease is lost: the reaper hands the action back, another worker claims it.
    retry_body = b"{}"
    await repo.complete_actions(
        [Outcome(first.id, first.attempt, OutcomeKind.RETRY, error="lost", queue="q", message_body=retry_body)]
    )
    (second,) = await repo.claim_actions(ids, worker_id="w2", lease=30)
    assert second.attempt == 2
    stale = await repo.complete_actions([Outcome(first.id, first.attempt, OutcomeKind.SUCCEEDED, result_summary=1)])
    assert stale == []
    fresh = await repo.complete_actions([Outcome(second.id, second.attempt, OutcomeKind.SUCCEEDED, result_summary=2)])
    assert len(fresh) == 1
    action = await repo.get_action("t1", second.id)
    assert action is not None and action.result == 2 and action.attempt == 2


async def test_retry_schedules_a_delayed_outbox_row(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(1))
    await drain_outbox(repo)
    (c,) = await repo.claim_actions(ids, worker_id="w", lease=30)
    await repo.complete_actions(
        [Outcome(c.id, c.attempt, OutcomeKind.RETRY, error="e", retry_in=60, queue="q", message_body=b"m")]
    )
    assert await repo.outbox_size() == 1
    assert await drain_outbox(repo) == []  # not due for a minute
    assert await repo.claim_actions(ids, worker_id="w", lease=30) == []  # nor claimable early
    due = await repo.next_outbox_due()
    assert due is not None


async def test_failed_action_fails_the_job_and_lists_as_dead_letter(repo: Repository) -> None:
    job, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(2, type_="demo.fail"))
    claimed = await repo.claim_actions(ids, worker_id="w", lease=30)
    await repo.complete_actions(
        [
            Outcome(claimed[0].id, claimed[0].attempt, OutcomeKind.FAILED, error="boom"),
            Outcome(claimed[1].id, claimed[1].attempt, OutcomeKind.SUCCEEDED),
        ]
    )
    final = await repo.get_job("t1", job.id)
    assert final is not None and final.status is JobStatus.FAILED and final.failed == 1 and final.succeeded == 1
    dead = await repo.list_dead_letters("t1")
    assert [d.id for d in dead] == [claimed[0].id] and dead[0].error == "boom"
    assert await repo.list_dead_letters("t1", type_="other") == []
    assert await repo.list_dead_letters("t2") == []


async def test_expired_leases_are_found_and_heartbeats_extend_them(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(2))
    short = await repo.claim_actions(ids[:1], worker_id="w", lease=0.05)
    long = await repo.claim_actions(ids[1:], worker_id="w", lease=30)
    await asyncio.sleep(0.15)
    expired = await repo.expired_leases(10)
    assert [e.id for e in expired] == [short[0].id]
    kept = await repo.extend_leases([(short[0].id, short[0].attempt), (long[0].id, long[0].attempt + 1)], 30)
    assert kept == {short[0].id}  # the wrong attempt does not extend anything
    assert await repo.expired_leases(10) == []


async def test_polling_claims_due_actions_of_the_given_queues(repo: Repository) -> None:
    await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(3, queue="q1") + specs(2, queue="q2"))
    claimed = await repo.claim_due_actions(["q2"], limit=10, worker_id="w", lease=30)
    assert len(claimed) == 2 and {c.queue for c in claimed} == {"q2"}
    assert len(await repo.claim_due_actions(["q1", "q2"], limit=2, worker_id="w", lease=30)) == 2


async def test_progress_updates_are_fenced(repo: Repository) -> None:
    _, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(1))
    (c,) = await repo.claim_actions(ids, worker_id="w", lease=30)
    assert await repo.update_progress(c.id, c.attempt, 0.5, "half")
    assert not await repo.update_progress(c.id, c.attempt + 1, 0.9, "stale")
    action = await repo.get_action("t1", c.id)
    assert action is not None and action.progress == 0.5 and action.progress_message == "half"


async def test_jobs_list_newest_first_with_keyset_pages_and_status_filter(repo: Repository) -> None:
    made = [(await repo.create_job(tenant_id="t1", name=f"j{i}", metadata={}, actions=specs(1)))[0] for i in range(5)]
    await repo.create_job(tenant_id="t2", name="other", metadata={}, actions=specs(1))
    page1 = await repo.list_jobs("t1", status=None, before=None, limit=3)
    page2 = await repo.list_jobs("t1", status=None, before=page1[-1].id, limit=3)
    assert [j.name for j in page1 + page2] == ["j4", "j3", "j2", "j1", "j0"]
    assert await repo.list_jobs("t1", status="succeeded", before=None, limit=10) == []
    assert len(await repo.list_jobs("t1", status="pending", before=None, limit=10)) == 5
    assert made[0].tenant_id == "t1"


async def test_another_tenant_cannot_read_a_job(repo: Repository) -> None:
    job, ids = await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(1))
    assert await repo.get_job("t2", job.id) is None
    assert await repo.get_job_with_actions("t2", job.id) is None
    assert await repo.get_action("t2", ids[0]) is None
    assert await repo.get_job("t1", uuid.uuid4()) is None


async def test_api_keys_are_found_by_prefix_listed_per_tenant_and_revoked_once(repo: Repository) -> None:
    from jobyard.errors import Conflict, NotFound

    assert not await repo.any_active_api_key()
    one = await repo.create_api_key(
        tenant_id="t1", name="a", prefix="aaaaaaaaaaaa", key_hash="1" * 64, scopes=["admin"]
    )
    await repo.create_api_key(tenant_id="t2", name=None, prefix="bbbbbbbbbbbb", key_hash="2" * 64, scopes=["jobs:read"])
    found = await repo.get_api_key_by_prefix("aaaaaaaaaaaa")
    assert found is not None and found.id == one.id and found.scopes == ("admin",) and not found.revoked
    assert await repo.get_api_key_by_prefix("cccccccccccc") is None
    assert [k.tenant_id for k in await repo.list_api_keys("t2")] == ["t2"]
    assert len(await repo.list_api_keys()) == 2 and await repo.any_active_api_key()
    with pytest.raises(NotFound):
        await repo.revoke_api_key(str(one.id), tenant_id="t2")  # another tenant's key: not found
    revoked = await repo.revoke_api_key("aaaaaaaaaaaa", tenant_id="t1")
    assert revoked.revoked and revoked.revoked_at is not None
    with pytest.raises(Conflict):
        await repo.revoke_api_key(str(one.id))
    await repo.revoke_api_key("bbbbbbbbbbbb")
    assert not await repo.any_active_api_key()


async def test_audit_lines_are_written_with_the_change_and_read_per_tenant_newest_first(repo: Repository) -> None:
    from jobyard.model import AuditEntry

    who = uuid.uuid4()
    job, _ = await repo.create_job(
        tenant_id="t1", name=None, metadata={}, actions=specs(1),
        audit=AuditEntry("t1", "job.submitted", "ops", who, details={"actions": 1}),
    )  # fmt: skip
    await repo.cancel_job("t1", job.id, audit=AuditEntry("t1", "job.cancelled", "ops", who))
    await repo.record_audit(AuditEntry("t2", "schedule.created", "other", target="nightly"))
    await repo.record_audit(AuditEntry("t1", "webhook.created", "cli", details={"url": "https://example.org"}))
    lines = await repo.list_audit("t1")
    assert [line.action for line in lines] == ["webhook.created", "job.cancelled", "job.submitted"]
    assert lines[2].target == str(job.id) and lines[2].actor_key_id == who and lines[2].details == {"actions": 1}
    assert lines[1].target == str(job.id) and lines[0].actor == "cli" and lines[0].actor_key_id is None
    page = await repo.list_audit("t1", before=lines[0].id, limit=1)
    assert [line.action for line in page] == ["job.cancelled"]
    assert [line.action for line in await repo.list_audit("t1", action="job.submitted")] == ["job.submitted"]
    assert [line.target for line in await repo.list_audit("t2")] == ["nightly"]


async def test_a_failed_cancellation_writes_no_audit_line(repo: Repository) -> None:
    from jobyard.errors import NotFound
    from jobyard.model import AuditEntry

    with pytest.raises(NotFound):
        await repo.cancel_job("t1", uuid.uuid4(), audit=AuditEntry("t1", "job.cancelled", "ops"))
    assert await repo.list_audit("t1") == []


async def test_waiting_actions_are_counted_per_tenant(repo: Repository) -> None:
    await repo.create_job(tenant_id="t1", name=None, metadata={}, actions=specs(3))
    await repo.create_job(tenant_id="t2", name=None, metadata={}, actions=specs(1))
    assert await repo.count_waiting_actions("t1") == 3 and await repo.count_waiting_actions("t3") == 0


async def test_warm_opens_the_hot_path_pool_up_front(repo: Repository) -> None:
    await repo.warm()  # SQLite: nothing to open, and no error
    if repo.dialect == "postgresql":
        assert repo._pool is not None and repo._pool.get_size() == repo._pool_size
        await repo.warm()  # again: the connections are reused, not opened twice
        assert repo._pool.get_size() == repo._pool_size
