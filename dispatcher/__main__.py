"""``python -m dispatcher …`` = the ``dispatcher`` command."""

from dispatcher.cli.main import main

main()
