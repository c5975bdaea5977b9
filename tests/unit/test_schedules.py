"""Schedule timing: intervals, cron in a time zone, and what a late scheduler does with missed fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobyard.errors import ValidationError
from jobyard.schedules import Timing, check_cron, check_timezone, parse_every, plan_fire

T0 = datetime(2026, 11, 23, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("90s", 90), ("1d", 86400), (45, 45)])
def test_intervals_read_units(text: str | int, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "0s", "-5m", 0.5, "367d", 1e300, "9" * 400])
def test_bad_intervals_are_refused(bad: str | float) -> None:
    with pytest.raises(ValidationError):
        parse_every(bad)


def test_bad_cron_and_time_zone_are_refused() -> None:
    with pytest.raises(ValidationError, match="cron"):
        check_cron("every day")
    with pytest.raises(ValidationError, match="time zone"):
        check_timezone("Mars/Olympus")


def test_every_30_minutes_fires_on_the_interval_from_creation() -> None:
    timing = Timing(None, parse_every("30m"), "UTC", T0)
    first = timing.next_after(T0)
    assert first == T0 + timedelta(minutes=30)
    assert timing.next_after(first) == T0 + timedelta(minutes=60)


def test_daily_at_midnight_is_midnight_in_the_schedules_time_zone() -> None:
    assert Timing("0 0 * * *", None, "UTC", T0).next_after(T0) == datetime(2026, 11, 24, tzinfo=UTC)
    new_york = Timing("0 0 * * *", None, "America/New_York", T0).next_after(T0)
    assert new_york == datetime(2026, 11, 24, 5, tzinfo=UTC)  # midnight EST is 05:00 UTC


def test_every_two_hours_by_cron_is_on_even_hours() -> None:
    timing = Timing("0 */2 * * *", None, "UTC", T0)
    assert timing.next_after(T0) == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert timing.latest_at_or_before(datetime(2026, 11, 23, 12, tzinfo=UTC)) == datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_an_on_time_fire_runs_and_moves_to_the_next_time() -> None:
    timing = Timing(None, 60.0, "UTC", T0)
    due = T0 + timedelta(minutes=1)
    plan = plan_fire(timing, due, due + timedelta(seconds=5), grace=60, missed="skip")
    assert plan.fire_time == due and plan.next_fire_at == due + timedelta(minutes=1)


def test_missed_fire_times_are_skipped_with_skip() -> None:
    timing = Timing(None, 60.0, "UTC", T0)
    due = T0 + timedelta(minutes=1)
    now = due + timedelta(minutes=10, seconds=30)  # ten fire times missed, the latest 30 s ago (within grace)
    plan = plan_fire(timing, due, now, grace=10, missed="skip")
    assert plan.fire_time is None
    assert plan.next_fire_at == T0 + timedelta(minutes=12)


def test_missed_fire_times_run_once_with_run_once() -> None:
    timing = Timing(None, 60.0, "UTC", T0)
    due = T0 + timedelta(minutes=1)
    now = due + timedelta(minutes=10, seconds=30)
    plan = plan_fire(timing, due, now, grace=10, missed="run_once")
    assert plan.fire_time == T0 + timedelta(minutes=11)  # the latest missed one, once
    assert plan.next_fire_at == T0 + timedelta(minutes=12)


def test_when_the_latest_fire_time_is_on_time_older_missed_ones_are_dropped() -> None:
    timing = Timing(None, 60.0, "UTC", T0)
    due = T0 + timedelta(minutes=1)
    now = T0 + timedelta(minutes=5, seconds=5)
    for missed in ("skip", "run_once"):
        plan = plan_fire(timing, due, now, grace=30, missed=missed)  # type: ignore[arg-type]
        assert plan.fire_time == T0 + timedelta(minutes=5)
        assert plan.next_fire_at == T0 + timedelta(minutes=6)
