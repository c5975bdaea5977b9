"""jobyard: asynchronous jobs of many actions, with live status.

PostgreSQL is the source of truth, RabbitMQ delivers work, Redis makes things fast.
"""

from typing import TYPE_CHECKING, Any

from jobyard.config import Settings
from jobyard.errors import (
    ActionCancelled,
    ActionTimeout,
    ClientError,
    JobyardError,
    PermanentFailure,
)
from jobyard.model import ActionStatus, JobStatus
from jobyard.sdk import ActionContext, Yard

if TYPE_CHECKING:
    from jobyard.client import AsyncClient, Client

__version__ = "0.1.0"

__all__ = [
    "ActionCancelled",
    "ActionContext",
    "ActionStatus",
    "ActionTimeout",
    "AsyncClient",
    "Client",
    "ClientError",
    "JobStatus",
    "JobyardError",
    "PermanentFailure",
    "Settings",
    "Yard",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The HTTP clients load on first use, so that a worker process never imports httpx (about 6 MB of RSS)."""
    if name in ("AsyncClient", "Client"):
        from jobyard import client

        return getattr(client, name)
    raise AttributeError(f"module 'jobyard' has no attribute {name!r}")
