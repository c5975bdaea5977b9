"""The runtime: builds the store, broker and KV from settings, and owns their lifecycle.

One runtime per process; API, worker and relay share it when they run together (`jobyard dev`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from jobyard.auth import KeyDirectory, SessionStore
from jobyard.broker import Broker, create_broker
from jobyard.config import Settings
from jobyard.errors import JobyardError
from jobyard.events import EventBus
from jobyard.handoff import Handoff
from jobyard.kv import KV, create_kv
from jobyard.kv.cache import Cache, UserCache
from jobyard.kv.ratelimit import RateLimiter, parse_limits
from jobyard.kv.results import ResultStore
from jobyard.locks import Lock
from jobyard.metrics import Metrics
from jobyard.quotas import TenantQuotas
from jobyard.store import Repository, create_repository
from jobyard.webhooks import TargetGuard

log = logging.getLogger("jobyard.runtime")


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        repo: Repository | None = None,
        broker: Broker | None = None,
        kv: KV | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo or create_repository(settings)
        self.broker = broker or create_broker(settings)
        self.kv = kv or create_kv(settings)
        self.results = ResultStore(self.kv, settings.result_ttl)
        # Local copies live as long as the values in Redis: every write of a job is announced to every API process,
        # and a process that may have missed an announcement serves no local copy (``jobyard.kv.cache``).
        self.cache = Cache(self.kv, "api", local_ttl=settings.cache_ttl)
        self.events = EventBus(self.kv, self.cache)
        self.user_cache = UserCache(self.kv)
        self.rate_limiter = RateLimiter(self.kv, parse_limits(settings.rate_limits), settings.rate_limit_fallback)
        self.metrics = Metrics()
        self.webhook_guard = TargetGuard.from_settings(settings.webhook_allow_private, settings.webhook_allow_hosts)
        self.keys = KeyDirectory(self.repo, self.kv, settings.key_cache_ttl)
        self.sessions = SessionStore(self.kv, settings.session_ttl)
        self.quotas = TenantQuotas(settings, self.repo, self.kv)
        self.handoff = (
            Handoff(
                self.repo,
                self.broker,
                hold=settings.outbox_hold,
                batch=settings.relay_batch,
                message_actions=settings.message_actions,
            )
            if settings.publish_on_submit
            else None
        )
        self._started = False

    async def start(self, *, migrate: bool = False) -> None:
        if self._started:
            return
        if migrate:
            await self.repo.migrate()
        await self.broker.connect()
        await self._check_redis_eviction()
        self._started = True

    async def _check_redis_eviction(self) -> None:
        from jobyard.kv.redis import RedisKV, eviction_warning

        if isinstance(self.kv, RedisKV):
            warning = eviction_warning(await self.kv.eviction_policy())
            if warning is not None:
                log.warning(warning)

    def submission_handoff(self) -> Handoff | None:
        """The handoff a submission's messages go to, when it is running and the broker is up."""
        return self.handoff if self.handoff is not None and self.handoff.ready else None

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.handoff is not None:
            await self.handoff.stop()
        with contextlib.suppress(Exception):
            await self.broker.close()
        # the recomputed values still being stored, before Redis's connections close
        await self.cache.settle()
        await self.user_cache.settle()
        with contextlib.suppress(Exception):
            await self.kv.close()
        await self.repo.close()

    def lock(self, name: str, ttl: float = 30.0, wait: float = 60.0) -> Lock:
        """A distributed lock with a fencing token (see ``jobyard.locks``)."""
        return Lock(self.kv, self.repo, name, ttl=ttl, wait=wait)

    async def health(self) -> dict[str, Any]:
        """Each dependency's state: ``ok`` or the reason it is not."""
        checks: dict[str, Any] = {}
        for name, probe in (
            ("database", self.repo.ping),
            ("broker", self.broker.ping),
            ("redis", self.kv.ping),
        ):
            try:
                await probe()
                checks[name] = "ok"
            except JobyardError as exc:
                checks[name] = f"down: {exc}"
        return checks
