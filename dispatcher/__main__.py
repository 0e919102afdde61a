"""``python -m dispatcher …`` = the ``dispatcher`` command."""

from .cli import main

main()
