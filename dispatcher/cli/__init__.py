"""The ``dispatcher`` command line (click). ``main`` is the console-script entry point."""

from dispatcher.cli.main import main

__all__ = ["main"]
