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


# Clock readings (seconds) at which ``(now + 60000) - 60000`` is not ``now`` in floating point: the in-memory limiter
# refused the first request of a one-a-minute limit at such moments (a tenant quota of one job a minute, say).
ROUNDING_CLOCKS = [134175.8307720565, 16766.062551083734, 8370.369436082776]


@pytest.mark.parametrize("clock", ROUNDING_CLOCKS)
async def test_a_request_that_takes_the_whole_burst_is_admitted_whatever_the_clock_reads(clock: float) -> None:
    now_ms = clock * 1000
    assert (now_ms + 60_000.0) - 60_000.0 != now_ms  # the readings are what the test is about
    kv = MemoryKV(clock=lambda: clock)
    first = await kv.gcra("jobyard:rate:one", interval=60.0, burst=1)
    assert first.allowed and first.remaining == 0 and first.reset_after == 60.0
    refused = await kv.gcra("jobyard:rate:one", interval=60.0, burst=1)
    assert not refused.allowed and refused.retry_after == pytest.approx(60.0)
    assert (await kv.gcra("jobyard:rate:batch", interval=12.0, burst=5, cost=5)).allowed  # a batch of the whole burst
    # one at a time, at one instant: the whole burst, then no more
    singles = [(await kv.gcra("jobyard:rate:five", interval=12.0, burst=5)).allowed for _ in range(6)]
    assert singles == [True] * 5 + [False]
