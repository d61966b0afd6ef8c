"""``python -m spikebatch.cli`` = ``spikebatch``."""

from spikebatch.cli import main

main()
