"""The HTTP API (FastAPI): jobs, status, results, dead letters, health."""

from jobyard.api.app import create_app

__all__ = ["create_app"]
