"""The ``dispatcher`` click group, its context object and exit codes (the subcommand modules register on it)."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import click

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings, no_config_error
from dispatcher.core.errors import DispatcherError
from dispatcher.store.config_file import load_config

EXIT_OK = 0
EXIT_INVALID = 3
EXIT_CONFIG = 4


class Ctx:
    """Lazily loaded settings shared by subcommands."""

    def __init__(self, config: str | None) -> None:
        self.config_path = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_config(self.config_path)
            except DispatcherError as exc:
                config_exit(exc)
        return self._settings

    def deployment(self, *, needs_file: bool = False) -> Settings:
        """Settings of a deployment someone chose: a config file (or, unless ``needs_file``, $REDIS_URL).

        Commands that act on a running system use this: guessing (the cwd, localhost:6379) could
        act on another deployment, or on nothing, without a word.
        """
        s = self.settings
        if s.source is None and (needs_file or not s.redis_url):
            config_exit(no_config_error())
        return s


def config_exit(exc: DispatcherError) -> NoReturn:
    """Print a configuration problem and exit with EXIT_CONFIG."""
    click.echo(f"config error: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", envvar=d.CONFIG_ENV, type=click.Path(dir_okay=False),
              help="Config file (default: $DISPATCHER_CONFIG or ./dispatcher.yaml).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="agent-queue-dispatcher")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: int) -> None:
    """Dispatch Markdown task files to a pool of Claude Code agents.

    \b
    Quick start:
      dispatcher init            # example config + project
      dispatcher scan --dry-run  # what would run, in order, and why not
      dispatcher up              # everything on this host (embedded Redis)
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Ctx(config)
