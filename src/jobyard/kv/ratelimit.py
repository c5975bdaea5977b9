"""Rate limits shared by every API instance: GCRA in Redis, per route group and per caller.

When Redis is unreachable the configured fallback applies: a per-process limiter (default), fail open, or
fail closed.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from jobyard.errors import ConfigurationError, KVError
from jobyard.kv import keys
from jobyard.kv.base import KV, RateDecision
from jobyard.kv.memory import MemoryKV

log = logging.getLogger("jobyard.ratelimit")

_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RULE = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
GROUPS = ("submit", "read", "control")

Fallback = Literal["local", "open", "closed"]


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    period: float

    @property
    def interval(self) -> float:
        return self.period / self.count


def parse_limits(spec: str) -> dict[str, Limit]:
    """``"submit=100/minute, read=6000/minute"`` → {group: Limit}. Groups: submit, read, control."""
    limits: dict[str, Limit] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _RULE.match(part)
        if match is None or match.group(1) not in GROUPS or int(match.group(2)) < 1:
            raise ConfigurationError(
                f"JOBYARD_RATE_LIMITS: {part!r} is not GROUP=COUNT/PERIOD "
                f"(groups: {', '.join(GROUPS)}; periods: {', '.join(_PERIODS)})"
            )
        limits[match.group(1)] = Limit(int(match.group(2)), _PERIODS[match.group(3)])
    return limits


class RateLimiter:
    """``check(group, caller)`` admits or refuses one request; a burst of up to the limit is admitted at once."""

    def __init__(self, kv: KV, limits: dict[str, Limit], fallback: Fallback = "local") -> None:
        self.kv = kv
        self.limits = limits
        self.fallback = fallback
        self._local = MemoryKV()
        self._degraded = False
        self.refused: Counter[str] = Counter()  # refusals by route group (the /metrics counter)

    async def check(self, group: str, caller: str, cost: int = 1) -> tuple[Limit, RateDecision] | None:
        """Take ``cost`` units of ``caller``'s allowance in ``group`` (None: no limit for the group)."""
        limit = self.limits.get(group)
        if limit is None:
            return None
        key = keys.rate_limit(group, caller)
        try:
            decision = await self.kv.gcra(key, limit.interval, limit.count, cost)
            if self._degraded:
                log.info("rate limits are shared through Redis again")
                self._degraded = False
        except KVError as exc:
            if not self._degraded:
                log.warning("Redis unavailable for rate limits (%s); falling back to %r", exc, self.fallback)
                self._degraded = True
            if self.fallback == "open":
                decision = RateDecision(True, limit.count, 0.0, 0.0)
            elif self.fallback == "closed":
                decision = RateDecision(False, 0, 1.0, 1.0)
            else:
                decision = await self._local.gcra(key, limit.interval, limit.count, cost)
        if not decision.allowed:
            self.refused[group] += 1
        return limit, decision


def headers(limit: Limit, decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """``RateLimit-*`` headers (IETF draft) and ``Retry-After`` on a refusal."""
    out = [
        (b"ratelimit-limit", str(limit.count).encode()),
        (b"ratelimit-remaining", str(max(0, decision.remaining)).encode()),
        (b"ratelimit-reset", str(math.ceil(decision.reset_after)).encode()),
    ]
    if not decision.allowed:
        out.append((b"retry-after", str(max(1, math.ceil(decision.retry_after))).encode()))
    return out
