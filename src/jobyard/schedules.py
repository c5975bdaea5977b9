"""Schedules (pure, no I/O): cron and interval specs, the next fire time, and what a late scheduler does.

A fire time is *on time* while it is at most ``grace`` seconds old; older ones were *missed* (the relays were down).
``missed="skip"`` drops missed fire times; ``missed="run_once"`` runs one job for all of them together.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from jobyard.errors import ValidationError

MissedPolicy = Literal["skip", "run_once"]
MIN_INTERVAL = 1.0
MAX_INTERVAL = 366 * 86400.0  # a year and a day: longer periods belong in a cron expression

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(value: str | float) -> float:
    """``"30m"`` → 1800.0; ``"2h"``, ``"90s"``, ``"1d"`` or a number of seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _EVERY.match(value)
        if match is None:
            raise ValidationError(f"{value!r} is not an interval: use seconds or e.g. 90s, 30m, 2h, 1d", ("every",))
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s")[0]]
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ValidationError(f"an interval must be at least {MIN_INTERVAL:g} second", ("every",))
    if seconds > MAX_INTERVAL:
        raise ValidationError("an interval may be at most 366 days (use cron for longer periods)", ("every",))
    return seconds


def check_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValidationError(
            f"{expression!r} is not a cron expression (five fields: minute hour day-of-month month day-of-week)",
            ("cron",),
        )
    return expression


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Lisbon)", ("timezone",)
        ) from exc
    return name


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule fires: a cron expression in a time zone, or every ``interval`` seconds from ``anchor``."""

    cron: str | None
    interval: float | None
    timezone: str
    anchor: datetime

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (UTC)."""
        if self.interval is not None:
            elapsed = (moment - self.anchor).total_seconds()
            steps = max(0, math.floor(elapsed / self.interval) + 1)
            return self.anchor + timedelta(seconds=steps * self.interval)
        assert self.cron is not None
        local = moment.astimezone(ZoneInfo(self.timezone))
        nxt: datetime = croniter(self.cron, local).get_next(datetime)
        return nxt.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last fire time at or before ``moment`` (UTC); never before the anchor."""
        if self.interval is not None:
            steps = max(0, math.floor((moment - self.anchor).total_seconds() / self.interval))
            return self.anchor + timedelta(seconds=steps * self.interval)
        assert self.cron is not None
        local = (moment + timedelta(microseconds=1)).astimezone(ZoneInfo(self.timezone))
        prev: datetime = croniter(self.cron, local).get_prev(datetime)
        return prev.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class FirePlan:
    fire_time: datetime | None  # None: nothing to run now (missed runs skipped)
    next_fire_at: datetime
    note: str | None = None


def plan_fire(timing: Timing, due: datetime, now: datetime, grace: float, missed: MissedPolicy) -> FirePlan:
    """What to do with a schedule due at ``due`` (≤ ``now``): fire on time, catch up, skip or run once."""
    if (now - due).total_seconds() <= grace:
        return FirePlan(due, timing.next_after(due))  # on time (or catching up within the grace)
    latest = timing.latest_at_or_before(now)
    if latest > due and (now - latest).total_seconds() <= grace:
        return FirePlan(latest, timing.next_after(latest), note="older missed fire times skipped")
    if missed == "run_once":
        return FirePlan(latest, timing.next_after(now), note="missed fire times run once")
    return FirePlan(None, timing.next_after(now), note=f"missed fire times up to {latest.isoformat()} skipped")


@dataclass(slots=True)
class ScheduleRecord:
    id: UUID
    tenant_id: str
    name: str
    cron: str | None
    interval_seconds: float | None
    timezone: str
    job: dict[str, Any]
    missed: MissedPolicy
    paused: bool
    next_fire_at: datetime
    last_fired_at: datetime | None
    last_job_id: UUID | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.interval_seconds, self.timezone, self.created_at)

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {describe_seconds(self.interval_seconds or 0)}"


def describe_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
