"""Submit the network-ops jobs to a running jobyard and follow them to the end.

JOBYARD_APP=examples.network_ops.app:yard jobyard dev     # in one terminal
python -m examples.network_ops.run diagnose olt-001       # in another
python -m examples.network_ops.run apply-config 50
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from examples.network_ops.app import config_job, diagnostics_job
from jobyard import AsyncClient


async def follow(client: AsyncClient, job_id: str, *, timeout: float = 120.0, echo: bool = True) -> dict[str, Any]:
    """Poll the job's status until it is final, printing each action the moment it finishes."""
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        status = await client.status(job_id)
        for action in status["actions"]:
            if action["status"] in ("succeeded", "failed") and action["id"] not in reported:
                reported.add(action["id"])
                if echo:
                    print(f"  {action['type']:<20} {action['status']:<9} attempts={action['attempts']}")
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout}s")
        await asyncio.sleep(0.1)


async def diagnose(client: AsyncClient, olt: str, *, echo: bool = True) -> dict[str, Any]:
    body = diagnostics_job(olt)
    job_id = await client.submit(body["actions"], name=body["name"], metadata=body["metadata"])
    if echo:
        print(f"diagnostics of {olt}: job {job_id}")
    return await follow(client, job_id, echo=echo)


async def apply_config(client: AsyncClient, count: int, *, echo: bool = True) -> dict[str, Any]:
    devices = [f"onu-{i:04d}" for i in range(1, count + 1)]
    body = config_job(devices, ["vlan 100", "service-port 1 vlan 100 gpon 0/1/1 ont 1 gemport 1"])
    job_id = await client.submit(body["actions"], name=body["name"], metadata=body["metadata"])
    if echo:
        print(f"config to {count} devices: job {job_id}")
    status = await follow(client, job_id, echo=False)
    if echo:
        retried = sum(1 for a in status["actions"] if a["attempts"] > 1)
        print(f"  {status['status']}: {status['progress']['succeeded']} of {count} applied, {retried} after a retry")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("diagnose").add_argument("olt", nargs="?", default="olt-001")
    sub.add_parser("apply-config").add_argument("count", nargs="?", type=int, default=20)
    args = parser.parse_args()

    async def run() -> None:
        async with AsyncClient(args.url) as client:
            if args.command == "diagnose":
                await diagnose(client, args.olt)
            else:
                await apply_config(client, args.count)

    asyncio.run(run())


if __name__ == "__main__":
    main()
