"""The store: PostgreSQL (or SQLite when embedded) as jobyard's source of truth.

Only ``repository`` executes SQL; every statement it runs is named in ``queries``.
"""

from jobyard.store.repository import Repository, create_repository

__all__ = ["Repository", "create_repository"]
