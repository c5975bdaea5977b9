"""API-key look-ups through the generation cache: the store is read once per key per ``key_cache_ttl``.

Creating or revoking a key bumps its cache group and announces it on pub/sub, so every API instance drops what it
had at once: a revoked key is refused by the next request anywhere. With Redis down, look-ups read the store.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from uuid import UUID

from jobyard import jsonutil
from jobyard.auth.principal import NewKey, Principal, checked_scopes, checked_tenant, hash_key, new_key, prefix_of
from jobyard.errors import Unauthenticated
from jobyard.kv.base import KV
from jobyard.kv.cache import Cache
from jobyard.model import ApiKeyRecord, AuditEntry
from jobyard.store.repository import Repository

ANY_ACTIVE = "any-active"  # the group (and key) of "does any active key exist?"; prefixes are hex, so no clash
NAMESPACE = "keys"
_INVALID = "invalid or revoked API key"


class KeyDirectory:
    def __init__(self, repo: Repository, kv: KV, ttl: float, *, local_ttl: float = 1.0) -> None:
        self.repo = repo
        self.ttl = ttl
        self.cache = Cache(kv, NAMESPACE, local_ttl=min(local_ttl, ttl))

    async def lookup(self, prefix: str) -> dict[str, object] | None:
        """The key with this prefix as cached: id, tenant, name, scopes, hash, revoked; None if there is none."""

        async def compute() -> bytes:
            record = await self.repo.get_api_key_by_prefix(prefix)
            if record is None:
                return b"null"  # cached too: a flood of made-up keys does not reach the store
            return jsonutil.dumps(
                {
                    "id": str(record.id),
                    "tenant": record.tenant_id,
                    "name": record.name,
                    "scopes": list(record.scopes),
                    "hash": record.key_hash,
                    "revoked": record.revoked,
                }
            )

        found: dict[str, object] | None = jsonutil.loads(await self.cache.get_or_set(prefix, prefix, compute, self.ttl))
        return found

    async def principal_for_prefix(self, prefix: str, *, presented_hash: str | None) -> Principal | None:
        """The key's caller if it exists and is not revoked (and, given ``presented_hash``, matches it)."""
        found = await self.lookup(prefix)
        if found is None or found["revoked"]:
            return None
        if presented_hash is not None and not hmac.compare_digest(str(found["hash"]), presented_hash):
            return None
        scopes = found["scopes"]
        assert isinstance(scopes, list)
        name = found["name"]
        return Principal(
            tenant=str(found["tenant"]),
            scopes=frozenset(str(s) for s in scopes),
            via="key",
            key_id=UUID(str(found["id"])),
            name=str(name) if name is not None else None,
        )

    async def authenticate(self, presented: str) -> Principal:
        """The caller a presented key stands for; ``Unauthenticated`` for a malformed, unknown or revoked key."""
        prefix = prefix_of(presented.strip())
        if prefix is None:
            raise Unauthenticated(f"{_INVALID}: keys look like jy_<prefix>_<secret>")
        principal = await self.principal_for_prefix(prefix, presented_hash=hash_key(presented.strip()))
        if principal is None:
            raise Unauthenticated(_INVALID)
        return principal

    async def any_active(self) -> bool:
        """Whether any unrevoked key exists (an ``auto`` API on loopback serves without keys until one does)."""

        async def compute() -> bytes:
            return b"true" if await self.repo.any_active_api_key() else b"false"

        return bool(jsonutil.loads(await self.cache.get_or_set(ANY_ACTIVE, ANY_ACTIVE, compute, self.ttl)))

    async def create(
        self, tenant: str, scopes: Sequence[str], name: str | None = None, *, audit: AuditEntry | None = None
    ) -> tuple[NewKey, ApiKeyRecord]:
        """Make a key; the returned ``NewKey.key`` is the only time the whole key exists outside its owner."""
        made = new_key()
        record = await self.repo.create_api_key(
            tenant_id=checked_tenant(tenant),
            name=name,
            prefix=made.prefix,
            key_hash=made.key_hash,
            scopes=checked_scopes(scopes),
            audit=audit,
        )
        await self.cache.invalidate([made.prefix, ANY_ACTIVE])
        return made, record

    async def revoke(self, ref: str, *, tenant: str | None = None, audit: AuditEntry | None = None) -> ApiKeyRecord:
        """Revoke by id or prefix (only ``tenant``'s when given); every API instance refuses it from now on."""
        record = await self.repo.revoke_api_key(ref, tenant_id=tenant, audit=audit)
        await self.cache.invalidate([record.prefix, ANY_ACTIVE])
        return record

    async def forget_cached_state(self) -> None:
        """Drop the cached "any active key" answer (at start-up: the store may have changed while we were down)."""
        await self.cache.invalidate([ANY_ACTIVE])
