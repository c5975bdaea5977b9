"""The rate limiter when Redis fails: local, open or closed, as configured."""

from __future__ import annotations

from typing import Any

import pytest

from jobyard.errors import ConfigurationError, KVUnavailable
from jobyard.kv.memory import MemoryKV
from jobyard.kv.ratelimit import RateLimiter, parse_limits


class DeadRedis(MemoryKV):
    async def gcra(self, *args: Any, **kwargs: Any) -> Any:
        raise KVUnavailable("Redis is down")


def test_limits_parse_and_bad_specs_name_the_setting() -> None:
    limits = parse_limits("submit=100/minute, read=5/second")
    assert limits["submit"].interval == 0.6 and limits["read"].count == 5
    with pytest.raises(ConfigurationError, match="JOBYARD_RATE_LIMITS"):
        parse_limits("uploads=3/minute")


@pytest.mark.parametrize(("fallback", "admitted"), [("local", 3), ("open", 10), ("closed", 0)])
async def test_redis_down_falls_back_as_configured(fallback: Any, admitted: int) -> None:
    limiter = RateLimiter(DeadRedis(), parse_limits("submit=3/minute"), fallback)
    results = [await limiter.check("submit", "ip:1") for _ in range(10)]
    assert sum(1 for r in results if r is not None and r[1].allowed) == admitted


async def test_unlimited_groups_are_not_checked() -> None:
    limiter = RateLimiter(MemoryKV(), parse_limits("submit=1/minute"))
    assert await limiter.check("read", "ip:1") is None
