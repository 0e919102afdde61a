"""``dispatcher`` command line: parses arguments and delegates (decisions live elsewhere)."""

from __future__ import annotations

import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from dispatcher.inbox import files as aq
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings, load_config, no_config_error
from dispatcher.core.errors import ClaimError, DispatcherError, TaskFileError

EXIT_OK = 0
EXIT_ERROR = 1
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


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing dispatcher.yaml and example tasks.")
def init(directory: Path, force: bool) -> None:
    """Write a commented dispatcher.yaml and an example project with a few tasks.

    \b
    Example:  dispatcher init ~/agents && cd ~/agents && dispatcher scan --dry-run
    """
    from dispatcher.cli.examples import write_example

    try:
        written = write_example(directory, force=force)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--project", help="Project name for bare depends_on entries (default: from the path).")
@pass_ctx
def validate(obj: Ctx, paths: tuple[Path, ...], project: str | None) -> None:
    """Parse task files and explain what is wrong with each (exit 3 if any is invalid).

    \b
    Example:  dispatcher validate projects/web/.agent-queue/inbox/*.md
    """
    from dispatcher.inbox.reader import load_task

    bad = 0
    for path in paths:
        proj = project or _project_of(path)
        try:
            task = load_task(path, proj, obj.settings.max_task_bytes)
        except TaskFileError as exc:
            bad += 1
            click.echo(f"INVALID {path}: {exc.reason}" + (f" (line {exc.line})" if exc.line else ""))
            continue
        deps = ", ".join(map(str, task.depends_on)) or "none"
        click.echo(f"ok      {path}: {task.project}:{task.id} priority={task.priority.value} "
                   f"model={obj.settings.agent.model_for(task.priority.value)} depends_on={deps}")
        for w in task.warnings:
            click.echo(f"        warning: {w}")
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


def _project_of(path: Path) -> str:
    parts = path.resolve().parts
    if len(parts) >= 4 and parts[-2] == d.INBOX and parts[-3] == d.QUEUE_DIR:
        return parts[-4]
    return "default"


@cli.command()
@click.argument("project")
@click.argument("source", default="-", type=click.File("r", encoding="utf-8"))
@click.option("--id", "task_id", help="Task ID (default: a timestamped one with a random suffix).")
@click.option("--title", default="", help="Task title.")
@click.option("--priority", type=click.Choice(d.PRIORITIES, case_sensitive=False), default=d.DEFAULT_PRIORITY)
@click.option("--depends-on", "depends_on", multiple=True, help="project:task_id (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@pass_ctx
def submit(obj: Ctx, project: str, source: Any, task_id: str | None, title: str, priority: str,
           depends_on: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Add a task to PROJECT's inbox atomically; the body comes from SOURCE (file or - for stdin).

    \b
    Example:  echo "Fix the login bug" | dispatcher submit web --priority high --depends-on web:SETUP-1
    """
    from dispatcher.core.taskfile import render_task
    from dispatcher.inbox.reader import load_task

    try:
        proj = aq.project(obj.settings.projects_dir, project)
        text = render_task(title=title, priority=priority.lower(), tags=tags, depends_on=depends_on,
                           body=source.read())
        # A generated ID that collides (scripts submit in loops) is drawn again; a given one is refused.
        for attempt in range(1 if task_id else _ID_ATTEMPTS):
            new_id = task_id or _generated_id()
            try:
                path = _write_new_task(proj, new_id, text)
                break
            except ClaimError:
                if task_id or attempt == _ID_ATTEMPTS - 1:
                    raise
        try:
            load_task(path, proj.name)
        except TaskFileError:
            path.unlink()  # never leave a task we would refuse in the inbox
            raise
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


_ID_ATTEMPTS = 10


def _generated_id() -> str:
    """``T<date>-<time>-<6 hex>``: sorts by submission second, unique under bursts (random part)."""
    return time.strftime("T%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _write_new_task(proj: aq.Project, task_id: str, text: str) -> Path:
    """Write ``inbox/<id>.md`` atomically unless that ID is pending or in flight (ClaimError)."""
    for suffix in aq.STATE_SUFFIXES:
        if proj.task_path(task_id, suffix).exists():
            raise ClaimError(f"task {proj.name}:{task_id} already exists as {task_id}.md{suffix}")
    return aq.write_task_atomically(proj, task_id, text)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only report; change nothing (no Redis needed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def scan(obj: Ctx, dry_run: bool, as_json: bool) -> None:
    """Show, in dispatch order, what is eligible, blocked (on what), stuck, invalid (why).

    \b
    Without --dry-run it also writes .blocked/.invalid markers and asks the
    running system for a full scan (which dispatches).
    """
    from dispatcher.core.report import dumps, plan_json, render_plan
    from dispatcher.inbox.scanner import run_scan
    from dispatcher.flows.status import current_holds

    settings = obj.settings if dry_run else obj.deployment()
    result = run_scan(settings, now=time.time(), write=not dry_run)
    holds = current_holds(settings)  # projects on hold (e.g. folder not trusted) say so, not "eligible"
    click.echo(dumps(plan_json(result, holds)) if as_json else render_plan(result, holds))
    if not dry_run:
        from dispatcher.cli.client import send_task

        if send_task(settings, "full_scan"):
            click.echo("full_scan requested")
        else:
            click.echo("full_scan not requested: no running system reachable (see the warning above)", err=True)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "svg", "json"]), default="text",
              show_default=True, help="text: a tree; dot: Graphviz; mermaid: for Markdown; svg: a picture.")
@pass_ctx
def graph(obj: Ctx, fmt: str) -> None:
    """Print the dependency graph of pending tasks; cycles, blocked, stuck and failed tasks are highlighted.

    
    Example:  dispatcher graph --format dot | dot -Tsvg > graph.svg
    """
    from dispatcher.inbox.scanner import run_scan

    result = run_scan(obj.settings, now=time.time(), write=False)
    if fmt == "text":
        from dispatcher.core.report import render_graph

        click.echo(render_graph(result))
        return
    from dispatcher.core import depgraph
    from dispatcher.core.report import dumps

    g = depgraph.build(result)
    click.echo(dumps(g.as_dict()) if fmt == "json" else depgraph.RENDERERS[fmt](g))


def main() -> None:
    """Console-script entry point."""
    from dispatcher.cli.commands import cli as group  # importing commands registers the runtime subcommands
    from dispatcher.cli import ops  # noqa: F401  (web, doctor, logs)

    group(prog_name="dispatcher")
