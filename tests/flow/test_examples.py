"""The network-ops examples, run as a user would run them (through the client), so they never rot."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from examples.network_ops import app as netops
from examples.network_ops.run import apply_config, diagnose

from jobyard import AsyncClient
from tests.harness import stack


@pytest.fixture(autouse=True)
def fast_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netops, "SPEED", 0.2)


async def test_olt_diagnostics_finish_at_their_own_pace(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real device speed: the ping ends 0.4 s before the firmware check. At 0.2 that margin was 80 ms, and in CI on a
    # slow host the ping was recorded 9 ms after the firmware check (a pause of the test process's event loop between
    # the ping's sleeps would do that: the check's one timer fires first and the ping still has a sleep to go).
    monkeypatch.setattr(netops, "SPEED", 1.0)
    async with stack(make_settings(), netops.yard) as s, _client(s) as client:
        final = await diagnose(client, "olt-001", echo=False)
    assert final["status"] == "succeeded" and final["progress"]["percent"] == 100.0
    by_type = {a["type"]: a for a in final["actions"]}
    assert set(by_type) == {"olt.ping", "olt.optical_power", "olt.firmware_check"}
    assert by_type["olt.ping"]["finished_at"] < by_type["olt.firmware_check"]["finished_at"]
    assert len(by_type["olt.optical_power"]["result"]["rx_dbm"]) == 8


async def test_config_to_many_devices_retries_the_slow_ones(make_settings: Any) -> None:
    async with stack(make_settings(), netops.yard) as s, _client(s) as client:
        final = await apply_config(client, 30, echo=False)
    assert final["status"] == "succeeded" and final["progress"]["succeeded"] == 30
    retried = sorted(a["result"]["device"] for a in final["actions"] if a["attempts"] == 2)
    assert retried == ["onu-0007", "onu-0017", "onu-0027"]


def _client(s: Any) -> AsyncClient:
    """jobyard's own client, talking to the harness's app in-process."""
    return AsyncClient("http://jobyard.test", transport=httpx.ASGITransport(app=s.app))
