"""Side-by-side benchmarks of jobyard, Celery and Dramatiq on the real servers.

``python -m benchmarks.run`` is the one command; ``benchmarks/RESULTS.md`` records what it measured.
"""
