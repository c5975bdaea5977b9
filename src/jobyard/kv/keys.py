"""Every Redis key and channel name jobyard uses: ``jobyard:{kind}:{id}[:{field}]``. Nowhere else builds one."""

from __future__ import annotations

from uuid import UUID

PREFIX = "jobyard"


def result(action_id: UUID | str) -> str:
    """The full result of a succeeded action (JSON), kept for ``result_ttl`` seconds."""
    return f"{PREFIX}:result:{action_id}"


def rate_limit(group: str, caller: str) -> str:
    """GCRA state (the theoretical arrival time) of one caller in one route group; expires when idle."""
    return f"{PREFIX}:ratelimit:{group}:{caller}"


def lock(name: str) -> str:
    """A distributed lock; the value is the holder's token."""
    return f"{PREFIX}:lock:{name}"


def cache_value(namespace: str, key: str) -> str:
    """A cached value, stored as ``{generation}:{bytes}``."""
    return f"{PREFIX}:cache:{namespace}:{key}"


def cache_generation(namespace: str, group: str) -> str:
    """Bumped on every write that changes anything cached under ``group`` (e.g. one job)."""
    return f"{PREFIX}:cachegen:{namespace}:{group}"


def cache_fill(namespace: str, key: str, generation: str) -> str:
    """Held by the one process recomputing a missing value for one generation (stampede protection).

    Per generation: a reader after a write must not wait for a recompute of the data from before it (that fill
    would store the older generation, and its waiters would poll in vain until their deadline)."""
    return cache_fill_prefix(namespace, key) + generation


def cache_fill_prefix(namespace: str, key: str) -> str:
    """``cache_fill`` without the generation (``KV.lookup_or_fill`` appends the one it finds)."""
    return f"{PREFIX}:cachefill:{namespace}:{key}:"


def cache_invalidation_channel() -> str:
    """Pub/sub channel on which every process learns which cache groups changed."""
    return f"{PREFIX}:cache:invalidated"


def control_channel() -> str:
    """Pub/sub channel for instructions to every worker (cancel these running actions)."""
    return f"{PREFIX}:control"


def all_events_channel() -> str:
    """Pub/sub channel carrying every status event: one subscription per API process fans out to its streams."""
    return f"{PREFIX}:events:all"


def worker_presence(worker_id: str) -> str:
    """A worker's latest heartbeat (JSON), expiring when the worker stops beating."""
    return f"{PREFIX}:worker:{worker_id}"


def workers_channel() -> str:
    """Pub/sub channel where workers announce their heartbeats, so API processes learn who is alive."""
    return f"{PREFIX}:workers"


def session(id_hash: str) -> str:
    """A dashboard session (JSON: the signed-in key's prefix and the CSRF token), keyed by the id's SHA-256."""
    return f"{PREFIX}:session:{id_hash}"
