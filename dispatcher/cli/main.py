"""``dispatcher`` command line: assembles the click group from its subcommand modules.

Each module only parses and delegates (decisions live in flows/ and below):
group.py (the group, its context, exit codes), tasks.py (init, validate, submit,
scan, graph), commands.py (up, watch, pool, status, events, retry, pause,
resume, hosts), ops.py (web, doctor, notify, logs).
"""

from __future__ import annotations

# Importing a subcommand module registers its subcommands on the group.
from dispatcher.cli import commands, ops, tasks  # noqa: F401
from dispatcher.cli.group import EXIT_CONFIG, EXIT_INVALID, EXIT_OK, cli

__all__ = ["EXIT_CONFIG", "EXIT_INVALID", "EXIT_OK", "cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dispatcher")
