"""Distributed locks with fencing tokens: Redis holds the lock, the store issues the fence.

When Redis is down the lock is held by a row in the store instead; either way the fence only grows, so a
holder that lost its lock (expiry, a pause) can be told apart by whatever resource checks the fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from types import TracebackType

from jobyard.errors import ActionError, KVError
from jobyard.kv import keys
from jobyard.kv.base import KV
from jobyard.store.repository import Repository
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.locks")


class LockTimeout(ActionError):
    """The lock could not be taken within ``wait`` seconds."""


class LockLost(ActionError):
    """The lock expired while held (it could not be extended); work done under it may have overlapped."""


class Lock:
    """``async with ctx.lock("olt:olt-001", ttl=30) as lock:`` — ``lock.fence`` grows with every holder."""

    def __init__(self, kv: KV, repo: Repository, name: str, *, ttl: float = 30.0, wait: float = 60.0) -> None:
        self.kv, self.repo, self.name, self.ttl, self.wait = kv, repo, name, ttl, wait
        self.token = uuid.uuid4().hex
        self.fence = 0
        self.backend = ""
        self.lost = False
        self._keepalive: asyncio.Task[None] | None = None

    async def _try(self) -> bool:
        try:
            if await self.kv.set_nx(keys.lock(self.name), self.token.encode(), self.ttl):
                self.backend = "redis"
                self.fence = await self.repo.next_fence(self.name)
                return True
            return False
        except KVError:
            fence = await self.repo.take_lock(self.name, self.token, self.ttl)
            if fence is None:
                return False
            self.backend, self.fence = "store", fence
            return True

    async def __aenter__(self) -> Lock:
        deadline = time.monotonic() + self.wait
        delay = 0.02
        while not await self._try():
            if time.monotonic() >= deadline:
                raise LockTimeout(f"lock {self.name!r} still held by another holder after {self.wait:g}s")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)
        self._keepalive = asyncio.create_task(self._extend_until_released())
        return self

    async def _extend_until_released(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if self.backend == "redis":
                    held = await self.kv.extend_if_owner(keys.lock(self.name), self.token.encode(), self.ttl)
                else:
                    held = await self.repo.extend_lock(self.name, self.token, self.ttl)
            except Exception as exc:  # any failure to extend means we can no longer vouch for the lock
                log.warning("lock %r: extending failed (%s)", self.name, exc)
                held = False
            if not held:
                self.lost = True
                log.warning("lock %r (fence %d) was lost to expiry while held", self.name, self.fence)
                return

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await stop_tasks([self._keepalive])
        with contextlib.suppress(Exception):
            if self.backend == "redis":
                await self.kv.release_if_owner(keys.lock(self.name), self.token.encode())
            else:
                await self.repo.release_lock(self.name, self.token)
        if self.lost and exc_type is None:
            raise LockLost(f"lock {self.name!r} (fence {self.fence}) expired while held; its work may have overlapped")
