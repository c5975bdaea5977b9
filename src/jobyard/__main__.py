"""``python -m jobyard`` is the same as the ``jobyard`` command."""

from jobyard.cli import main

main()
