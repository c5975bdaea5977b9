"""jobyard's error hierarchy: every error the library raises derives from JobyardError.

JobyardError
├── ConfigurationError          a setting is missing or invalid (raised at start-up)
├── ValidationError             a submission or argument is invalid (HTTP 422)
│   └── UnknownActionType       the action type is not registered
├── NotFound                    a job, action or result does not exist (HTTP 404)
├── Conflict                    the request conflicts with the current state (HTTP 409)
├── AuthError                   the caller may not do this
│   ├── Unauthenticated         no valid API key or session (HTTP 401)
│   └── Forbidden               the key lacks the scope, or the CSRF token is missing (HTTP 403)
├── LimitExceeded               a configured limit was exceeded; the message names the setting
│   ├── PayloadTooLarge         the request body is larger than allowed (HTTP 413)
│   └── QuotaExceeded           a per-tenant quota is used up for now (HTTP 429, with Retry-After)
├── StoreError                  the database failed
│   └── StoreUnavailable        the database cannot be reached right now (HTTP 503, retry later)
├── BrokerError                 the message broker failed
│   └── BrokerUnavailable       the broker cannot be reached right now
├── KVError                     Redis (or the in-memory KV) failed
│   └── KVUnavailable           Redis cannot be reached right now
├── ActionError                 raised inside handlers
│   ├── ActionTimeout           the soft time limit of an attempt passed
│   ├── ActionCancelled         the job was cancelled while the action ran
│   └── PermanentFailure        fail now, without using the remaining attempts
└── ClientError                 the HTTP client got an error answer from the API
"""

from __future__ import annotations

from typing import Any


class JobyardError(Exception):
    """Root of every error jobyard raises."""


class ConfigurationError(JobyardError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class ValidationError(JobyardError):
    """Invalid input. ``loc`` is the path of the field at fault, e.g. ("body", "actions", 0, "type")."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc


class UnknownActionType(ValidationError):
    """The action type is not registered in the application's Yard."""


class NotFound(JobyardError):
    """The job, action or result does not exist (or belongs to another tenant)."""


class Conflict(JobyardError):
    """The request conflicts with the current state of the resource."""


class AuthError(JobyardError):
    """The caller may not do this."""


class Unauthenticated(AuthError):
    """No valid credentials: a missing, unknown or revoked API key, or an expired session."""


class Forbidden(AuthError):
    """Authenticated, but not allowed: a missing scope, or a missing or wrong CSRF token."""


class LimitExceeded(JobyardError):
    """A configured limit was exceeded; the message names the limit and its setting."""


class PayloadTooLarge(LimitExceeded):
    """The request body is larger than ``JOBYARD_MAX_BODY_BYTES``."""


class QuotaExceeded(LimitExceeded):
    """A per-tenant quota is used up for now; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(JobyardError):
    """The database failed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; the operation may be retried later."""


class BrokerError(JobyardError):
    """The message broker failed."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached; work waits in the outbox and workers poll the store."""


class KVError(JobyardError):
    """The key-value store (Redis or memory) failed."""


class KVUnavailable(KVError):
    """Redis cannot be reached; callers fall back to the store."""


class ActionError(JobyardError):
    """Base for errors raised inside action handlers."""


class ActionTimeout(ActionError):
    """The soft time limit of this attempt has passed; clean up and return or raise."""


class ActionCancelled(ActionError):
    """The job was cancelled while this action was running."""


class PermanentFailure(ActionError):
    """Raise from a handler to fail the action at once, without further attempts."""


class ClientError(JobyardError):
    """The API answered with an error status."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {_readable(detail)}")
        self.status_code = status_code
        self.detail = detail  # as the API sent it (a 422's list of field errors stays a list)


def _readable(detail: Any) -> str:
    """A 422's field errors as ``body.actions[0].type: message``, one after another; any other detail as it is."""
    if not isinstance(detail, list) or not detail or not all(isinstance(e, dict) and "msg" in e for e in detail):
        return str(detail)
    parts = []
    for error in detail:
        where = ""
        for item in error.get("loc") or ():
            where += f"[{item}]" if isinstance(item, int) else f".{item}" if where else str(item)
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)
