"""Runtime subcommands (up, watch, pool, status, events, retry, hook), registered on the CLI group."""

from __future__ import annotations
