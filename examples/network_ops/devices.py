"""Simulated network devices: deterministic latencies and faults, so the example runs anywhere.

Real code paths, fake wires: each call sleeps like a device would and may fail like one does.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass


class DeviceUnreachable(ConnectionError):
    """The device did not answer (a retry may succeed)."""


def _unit(device: str, salt: str) -> float:
    """A stable number in [0, 1) per device and purpose."""
    digest = hashlib.sha256(f"{device}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


@dataclass(frozen=True)
class SimulatedDevice:
    name: str
    speed: float = 1.0  # scale every latency (tests use a small value)

    async def ping(self, count: int) -> list[float]:
        rtts = []
        for i in range(count):
            await asyncio.sleep(0.05 * self.speed)
            rtts.append(round(0.4 + 2.0 * _unit(self.name, f"rtt{i}"), 2))
        return rtts

    async def read_optical_power(self, port: int) -> float:
        await asyncio.sleep(0.1 * self.speed)
        return round(-8.0 - 20.0 * _unit(self.name, f"rx{port}"), 1)

    async def firmware_version(self) -> str:
        await asyncio.sleep(0.6 * self.speed)
        return f"5.{int(_unit(self.name, 'fw') * 4)}.1"

    async def apply_config(self, lines: list[str], attempt: int) -> int:
        """Push config lines; devices whose name ends in 7 time out on their first attempt."""
        await asyncio.sleep((0.05 + 0.1 * _unit(self.name, "cfg")) * self.speed)
        if self.name.endswith("7") and attempt == 1:
            raise DeviceUnreachable(f"{self.name}: SSH session timed out")
        return len(lines)
