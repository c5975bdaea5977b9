"""The scheduler: turns due schedules into jobs. Run by the leading relay only (the single process on SQLite).

Which fire time to run is ``schedules.plan_fire``; the store's (schedule_id, fire_time) key makes each fire time
run at most once even if two relays both believe they lead for a moment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobyard.config import Settings
from jobyard.errors import ValidationError
from jobyard.schedules import ScheduleRecord, plan_fire
from jobyard.sdk import Yard
from jobyard.store.repository import FireDecision, FireOutcome, Repository, ScheduledJob
from jobyard.submission import build_action_specs, template_actions

log = logging.getLogger("jobyard.scheduler")


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        yard: Yard | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.yard = yard
        self.clock = clock
        self.fired = 0
        self.skipped = 0
        self.failed = 0

    async def fire_due(self, limit: int = 100) -> list[FireOutcome]:
        outcomes = await self.repo.fire_due_schedules(limit, self._decide)
        for outcome in outcomes:
            if outcome.job_id is not None:
                self.fired += 1
                log.info("schedule %s (%s) fired job %s", outcome.schedule.name, outcome.schedule.id, outcome.job_id)
            elif outcome.decision.error is not None:
                self.failed += 1
            elif outcome.decision.fire_time is None:
                self.skipped += 1
        return outcomes

    async def _decide(self, schedule: ScheduleRecord) -> FireDecision:
        plan = plan_fire(
            schedule.timing, schedule.next_fire_at, self.clock(), self.settings.schedule_grace, schedule.missed
        )
        if plan.note:
            log.warning("schedule %s (%s): %s", schedule.name, schedule.id, plan.note)
        if plan.fire_time is None:
            return FireDecision(None, plan.next_fire_at)
        try:
            job = self._job(schedule, plan.fire_time)
        except ValidationError as exc:
            log.error("schedule %s (%s) cannot run: %s", schedule.name, schedule.id, exc.message)
            return FireDecision(plan.fire_time, plan.next_fire_at, error=exc.message)
        return FireDecision(plan.fire_time, plan.next_fire_at, job=job)

    def _job(self, schedule: ScheduleRecord, fire_time: datetime) -> ScheduledJob:
        if self.yard is None:
            raise ValidationError("this relay has no app loaded (JOBYARD_APP) to resolve the schedule's actions")
        template: dict[str, Any] = schedule.job
        specs = build_action_specs(self.yard, self.settings, template_actions(template))
        metadata = {
            **(template.get("metadata") or {}),
            "schedule_id": str(schedule.id),
            "fire_time": fire_time.isoformat(),
        }
        return ScheduledJob(name=template.get("name") or schedule.name, metadata=metadata, actions=specs)
