"""Per-tenant quotas on submissions: jobs per minute (GCRA, shared through Redis) and actions waiting at once.

Each refusal is a ``QuotaExceeded`` naming the quota and its setting; 0 turns a quota off.
"""

from __future__ import annotations

from jobyard.config import Settings
from jobyard.errors import QuotaExceeded
from jobyard.kv.base import KV
from jobyard.kv.ratelimit import Limit, RateLimiter
from jobyard.store.repository import Repository

JOBS_GROUP = "tenant-jobs"


class TenantQuotas:
    def __init__(self, settings: Settings, repo: Repository, kv: KV) -> None:
        self.repo = repo
        self.max_waiting = settings.tenant_max_queued_actions
        limits = {JOBS_GROUP: Limit(settings.tenant_jobs_per_minute, 60.0)} if settings.tenant_jobs_per_minute else {}
        # The same limiter as the route rate limits, keyed by tenant: shared by every API instance, with the same
        # fallback when Redis is down.
        self.jobs = RateLimiter(kv, limits, settings.rate_limit_fallback)

    async def admit_submission(self, tenant: str, actions: int, jobs: int = 1) -> None:
        """Raise ``QuotaExceeded`` if ``tenant`` may not submit ``jobs`` jobs of ``actions`` actions in all now."""
        what = "this job adds" if jobs == 1 else f"these {jobs} jobs add"
        if self.max_waiting:
            waiting = await self.repo.count_waiting_actions(tenant)
            if waiting + actions > self.max_waiting:
                raise QuotaExceeded(
                    f"tenant {tenant!r} may have at most {self.max_waiting} actions waiting "
                    f"(JOBYARD_TENANT_MAX_QUEUED_ACTIONS); {waiting} are waiting and {what} {actions}; "
                    "retry once some have run",
                    retry_after=5.0,
                )
        checked = await self.jobs.check(JOBS_GROUP, tenant, cost=jobs)
        if checked is not None and not checked[1].allowed:
            limit, decision = checked
            if jobs > limit.count:
                raise QuotaExceeded(
                    f"tenant {tenant!r} may submit at most {limit.count} jobs per minute "
                    f"(JOBYARD_TENANT_JOBS_PER_MINUTE), fewer than the {jobs} of this batch: send smaller batches",
                    retry_after=60.0,
                )
            raise QuotaExceeded(
                f"tenant {tenant!r} may submit at most {limit.count} jobs per minute "
                f"(JOBYARD_TENANT_JOBS_PER_MINUTE); retry in {decision.retry_after:.1f}s",
                retry_after=decision.retry_after,
            )
