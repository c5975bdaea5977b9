"""Retention: the leading relay prunes finished jobs (and what hangs off them) older than JOBYARD_RETENTION_DAYS.

Batches keep each transaction short; a pass stops after ``max_batches`` so the leader's other duties keep going.
"""

from __future__ import annotations

import logging

from jobyard.config import Settings
from jobyard.store.repository import Repository

log = logging.getLogger("jobyard.retention")

DAY = 86400.0


class Pruner:
    def __init__(self, settings: Settings, repo: Repository, max_batches: int = 20) -> None:
        self.settings = settings
        self.repo = repo
        self.max_batches = max_batches
        self.pruned_jobs = 0

    @property
    def enabled(self) -> bool:
        return self.settings.retention_days > 0

    async def prune_once(self) -> dict[str, int]:
        """One pass: batches until one comes back short (or ``max_batches``); totals of what was deleted."""
        totals = {"jobs": 0, "webhook_deliveries": 0, "schedule_fires": 0}
        if not self.enabled:
            return totals
        batch = self.settings.retention_batch
        for _ in range(self.max_batches):
            pruned = await self.repo.prune_finished(self.settings.retention_days * DAY, batch)
            for key, count in pruned.items():
                totals[key] += count
            if max(pruned.values()) < batch:
                break
        self.pruned_jobs += totals["jobs"]
        if any(totals.values()):
            log.info("retention: pruned %s (older than %g days)", totals, self.settings.retention_days)
        return totals
