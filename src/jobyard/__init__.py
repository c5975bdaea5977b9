"""jobyard: asynchronous jobs of many actions, with live status.

PostgreSQL is the source of truth, RabbitMQ delivers work, Redis makes things fast.
"""

from jobyard.client import AsyncClient, Client
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
