"""Statuses, consolidation, backoff and progress: the pure rules."""

from __future__ import annotations

import random

import pytest

from jobyard.model import ActionStatus, JobStatus, can_transition, consolidate, job_progress, retry_delay


@pytest.mark.parametrize(
    ("counts", "started", "expected"),
    [
        ((3, 0, 0, 0), False, JobStatus.PENDING),
        ((3, 1, 0, 0), True, JobStatus.RUNNING),
        ((3, 3, 0, 0), True, JobStatus.SUCCEEDED),
        ((3, 2, 1, 0), True, JobStatus.FAILED),
        ((3, 2, 0, 1), True, JobStatus.CANCELLED),
        ((3, 1, 1, 1), True, JobStatus.FAILED),
        ((3, 1, 1, 0), True, JobStatus.RUNNING),
    ],
)
def test_consolidate_gives_the_job_status_from_counters(
    counts: tuple[int, int, int, int], started: bool, expected: JobStatus
) -> None:
    assert consolidate(*counts, started=started) is expected


def test_final_statuses_allow_no_transition_except_replay_of_failed() -> None:
    assert not can_transition(ActionStatus.SUCCEEDED, ActionStatus.RUNNING)
    assert not can_transition(ActionStatus.CANCELLED, ActionStatus.QUEUED)
    assert can_transition(ActionStatus.FAILED, ActionStatus.QUEUED)
    assert can_transition(ActionStatus.RUNNING, ActionStatus.RETRYING)
    assert not can_transition(ActionStatus.QUEUED, ActionStatus.SUCCEEDED)


def test_retry_delay_grows_exponentially_within_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    samples = {attempt: [retry_delay(attempt, 1.0, 30.0, rng) for _ in range(500)] for attempt in (1, 2, 3, 6, 10)}
    assert max(samples[1]) <= 1.0 and max(samples[2]) <= 2.0 and max(samples[3]) <= 4.0
    assert max(samples[10]) <= 30.0 and max(samples[10]) > 20.0  # capped, yet spread over the window
    assert min(samples[6]) < 5.0 < max(samples[6])  # full jitter: not in lockstep
    assert retry_delay(3, 0.0, 30.0) == 0.0


def test_job_progress_counts_and_weights_running_actions() -> None:
    progress = job_progress([("succeeded", 1.0), ("running", 0.5), ("queued", 0.0), ("failed", 0.0)])
    assert (progress.total, progress.succeeded, progress.running, progress.queued, progress.failed) == (4, 1, 1, 1, 1)
    assert progress.percent == 62.5
    assert job_progress([("succeeded", 1.0)] * 3).percent == 100.0
