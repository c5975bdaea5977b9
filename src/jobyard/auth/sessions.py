"""Dashboard sessions in the KV (Redis, or memory when embedded): a random id in an httpOnly cookie.

The KV holds only the SHA-256 of the id, the signed-in key's prefix (so a revoked key ends its sessions at once)
and the session's CSRF token, under a TTL.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from jobyard import jsonutil
from jobyard.kv import keys
from jobyard.kv.base import KV


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    key_prefix: str
    csrf_token: str


def _storage_key(session_id: str) -> str:
    return keys.session(hashlib.sha256(session_id.encode()).hexdigest())


class SessionStore:
    def __init__(self, kv: KV, ttl: float) -> None:
        self.kv = kv
        self.ttl = ttl

    async def create(self, key_prefix: str) -> Session:
        session = Session(secrets.token_urlsafe(32), key_prefix, secrets.token_urlsafe(32))
        body = jsonutil.dumps({"prefix": key_prefix, "csrf": session.csrf_token})
        await self.kv.set(_storage_key(session.id), body, self.ttl)
        return session

    async def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        raw = await self.kv.get(_storage_key(session_id))
        if raw is None:
            return None
        data = jsonutil.loads(raw)
        return Session(session_id, str(data["prefix"]), str(data["csrf"]))

    async def delete(self, session_id: str) -> None:
        await self.kv.delete(_storage_key(session_id))
