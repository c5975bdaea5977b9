"""Network operations on jobyard: diagnose an OLT (three actions at their own pace), apply a config to N devices.

Run it:  JOBYARD_APP=examples.network_ops.app:yard jobyard dev
"""

from __future__ import annotations

import os
from typing import Any

from examples.network_ops.devices import SimulatedDevice
from jobyard import ActionContext, Yard

yard = Yard("network-ops")

# Tests shrink the simulated latencies; a person trying the example sees realistic ones.
SPEED = float(os.environ.get("NETOPS_SPEED", "1.0"))
LATEST_FIRMWARE = "5.3.1"


def device(payload: dict[str, Any]) -> SimulatedDevice:
    return SimulatedDevice(payload["device"], speed=SPEED)


@yard.action("olt.ping", queue="diagnostics", max_attempts=3, timeout=60)
async def ping(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Ping the device a few times and report round-trip times."""
    count = int(payload.get("count", 4))
    rtts = await device(payload).ping(count)
    return {"device": payload["device"], "sent": count, "received": len(rtts), "avg_rtt_ms": sum(rtts) / len(rtts)}


@yard.action("olt.optical_power", queue="diagnostics", max_attempts=3, timeout=120)
async def optical_power(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Read the received optical power of every PON port, reporting progress per port."""
    ports = int(payload.get("ports", 8))
    readings = {}
    for port in range(1, ports + 1):
        readings[f"pon{port}"] = await device(payload).read_optical_power(port)
        ctx.progress(port / ports, f"read port {port} of {ports}")
    low = sorted(p for p, dbm in readings.items() if dbm < -27.0)
    return {"device": payload["device"], "rx_dbm": readings, "low_ports": low}


@yard.action("olt.firmware_check", queue="diagnostics", max_attempts=3, timeout=120)
async def firmware_check(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Compare the running firmware with the latest release."""
    version = await device(payload).firmware_version()
    return {"device": payload["device"], "version": version, "up_to_date": version == LATEST_FIRMWARE}


# One configuration session per device at a time, however many jobs target it: a concurrency key.
@yard.action(
    "config.apply", queue="config", max_attempts=3, timeout=120, concurrency_key=lambda p: f"device:{p['device']}"
)
async def apply_config(ctx: ActionContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Push configuration lines to one device (idempotent per attempt: the key travels with the change)."""
    applied = await device(payload).apply_config(payload["lines"], ctx.attempt)
    return {"device": payload["device"], "lines": applied, "change_id": ctx.idempotency_key}


def diagnostics_job(olt: str) -> dict[str, Any]:
    """The body of "run diagnostics on OLT <olt>": three independent actions."""
    return {
        "name": f"diagnostics {olt}",
        "metadata": {"device": olt, "kind": "diagnostics"},
        "actions": [
            {"type": "olt.ping", "payload": {"device": olt, "count": 4}},
            {"type": "olt.optical_power", "payload": {"device": olt, "ports": 8}},
            {"type": "olt.firmware_check", "payload": {"device": olt}},
        ],
    }


def config_job(devices: list[str], lines: list[str]) -> dict[str, Any]:
    """The body of "apply this config to N devices": one action per device."""
    return {
        "name": f"apply config to {len(devices)} devices",
        "metadata": {"kind": "config", "lines": len(lines)},
        "actions": [{"type": "config.apply", "payload": {"device": d, "lines": lines}} for d in devices],
    }
