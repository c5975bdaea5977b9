"""Who is calling: a tenant and the scopes its key grants; and the API key format (``jy_<prefix>_<secret>``).

A key is shown once; the store keeps its SHA-256 and the short public prefix that finds the row.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from jobyard.errors import ValidationError
from jobyard.model import AuditEntry

JOBS_READ = "jobs:read"
JOBS_WRITE = "jobs:write"
ADMIN = "admin"  # manages the tenant's keys and reads its audit log; implies every other scope
SCOPES = (JOBS_READ, JOBS_WRITE, ADMIN)

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_TENANT = re.compile(TENANT_PATTERN)
KEY_MARK = "jy"
_PREFIX_HEX = 12
_KEY = re.compile(rf"^{KEY_MARK}_([0-9a-f]{{{_PREFIX_HEX}}})_([A-Za-z0-9_-]{{20,100}})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str  # the whole key: shown to its owner once, never stored
    prefix: str
    key_hash: str


def new_key() -> NewKey:
    prefix = secrets.token_hex(_PREFIX_HEX // 2)
    key = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key, prefix, hash_key(key))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(presented: str) -> str | None:
    """The public prefix of a well-formed key, else None (the key is then rejected without a store read)."""
    match = _KEY.match(presented)
    return match.group(1) if match else None


def checked_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes in their canonical order; a ValidationError names any unknown one."""
    wanted = set(scopes)
    unknown = sorted(wanted.difference(SCOPES))
    if unknown:
        raise ValidationError(f"unknown scope(s) {', '.join(unknown)}; scopes are {', '.join(SCOPES)}", ("scopes",))
    if not wanted:
        raise ValidationError(f"give at least one scope of {', '.join(SCOPES)}", ("scopes",))
    return tuple(s for s in SCOPES if s in wanted)


def checked_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise ValidationError(f"tenant {tenant!r} must match {TENANT_PATTERN}", ("tenant",))
    return tenant


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request. ``via``: an API key, a dashboard session, or an API serving without keys."""

    tenant: str
    scopes: frozenset[str]
    via: Literal["key", "session", "open"]
    key_id: UUID | None = None
    name: str | None = None
    csrf_token: str | None = None  # sessions only: unsafe requests must echo it

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def actor(self) -> str:
        if self.key_id is None:
            return "anonymous"
        return self.name or f"key {self.key_id}"

    def audit(self, action: str, target: str | None = None, details: dict[str, Any] | None = None) -> AuditEntry:
        return AuditEntry(self.tenant, action, self.actor, self.key_id, target, details)


OPEN_PRINCIPAL = Principal(DEFAULT_TENANT, frozenset(SCOPES), "open")
