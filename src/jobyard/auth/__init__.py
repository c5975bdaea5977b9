"""Tenants and API keys: key format and hashing, cached key look-ups, dashboard sessions.

The HTTP side (dependencies, login pages) lives in ``jobyard.api``; this package has no web framework in it.
"""

from jobyard.auth.directory import KeyDirectory
from jobyard.auth.principal import ADMIN, JOBS_READ, JOBS_WRITE, SCOPES, Principal
from jobyard.auth.sessions import SessionStore

__all__ = ["ADMIN", "JOBS_READ", "JOBS_WRITE", "SCOPES", "KeyDirectory", "Principal", "SessionStore"]
