"""Task-file subcommands (init, validate, submit, scan, graph), registered on the CLI group.

scan and graph import the scan machinery (scanner, report, status; the Celery client) inside
the function, and init the example writer: every ``dispatcher`` call imports this module,
and ``validate``/``submit`` should not pay for them.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from dispatcher.cli.group import EXIT_INVALID, EXIT_OK, Ctx, cli, pass_ctx
from dispatcher.core import defaults as d
from dispatcher.core.errors import ClaimError, DispatcherError, TaskFileError
from dispatcher.core.taskfile import render_task
from dispatcher.inbox import files as aq
from dispatcher.inbox.fsio import STATE_SUFFIXES
from dispatcher.inbox.reader import load_task


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
    for suffix in STATE_SUFFIXES:
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
    from dispatcher.flows.status import current_holds
    from dispatcher.inbox.scanner import run_scan

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
    from dispatcher.core import depgraph
    from dispatcher.core.report import dumps, render_graph
    from dispatcher.inbox.scanner import run_scan

    result = run_scan(obj.settings, now=time.time(), write=False)
    if fmt == "text":
        click.echo(render_graph(result))
        return
    g = depgraph.build(result)
    click.echo(dumps(g.as_dict()) if fmt == "json" else depgraph.RENDERERS[fmt](g))
