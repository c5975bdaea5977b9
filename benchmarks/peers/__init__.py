"""Peer systems (Celery, Dramatiq) for jobyard's side-by-side benchmark.

Bench-only code: nothing in the jobyard runtime imports this package.
"""
