"""Runtime subcommands (up, watch, pool, status, events, retry, pause, resume, hosts), registered on the CLI group.

Every ``dispatcher`` call imports every subcommand module, so the flows a subcommand needs
(up, status, retry, the watcher; the Celery client) are imported inside it: all of them up
front would add about 0.5 s (Celery alone 0.2 s) to ``dispatcher --help``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import threading
import time
from typing import Any

import click
import redis

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux
from dispatcher.cli.group import Ctx, cli, config_exit, pass_ctx
from dispatcher.core.errors import ClaimError, DispatcherError
from dispatcher.inbox.fsinfo import is_network
from dispatcher.store import events as ev
from dispatcher.store import hosts, pause
from dispatcher.store.redis_conn import client, configured_url

logger = logging.getLogger(__name__)


@cli.command()
@click.option("--flower", is_flag=True,
              help="Also run Flower (loopback; login from FLOWER_BASIC_AUTH, else generated into "
                   "<state_dir>/web-auth).")
@click.option("--web", is_flag=True,
              help="Also run the fleet page (loopback; basic auth always, see 'dispatcher web').")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 16), help="Celery worker processes.")
@click.option("--loglevel", default="info", show_default=True)
@click.option("-v", "--verbose", is_flag=True,
              help="Components log here (else to state_dir/logs/; see 'dispatcher logs').")
@click.option("--join", "join", metavar="REDIS_URL", default=None,
              help="Join a fleet: use this shared Redis (redis:// or rediss://) instead of an embedded one.")
@click.option("--host", "host", metavar="NAME", default=None,
              help="This host's name in the fleet (default: host.name, $AQ_HOST, else the machine's hostname).")
@pass_ctx
def up(obj: Ctx, flower: bool, web: bool, workers: int, loglevel: str, verbose: bool, join: str | None,
       host: str | None) -> None:
    """Run everything on this host: Redis (embedded if none configured), tmux pool, worker, beat, watcher.

    \b
    Example:  dispatcher init demo && cd demo && dispatcher up --flower
    A second machine (docs/multi-host.md):
              dispatcher up --join rediss://:PASSWORD@redis.example:6379/0 --host build-2
    Stop with Ctrl-C; restarting loses nothing.
    """
    from dispatcher.flows.up import join_fleet, run_up

    settings = obj.deployment(needs_file=True)
    if join or host:
        try:
            settings = join_fleet(settings, join, host)
        except DispatcherError as exc:
            raise click.BadParameter(str(exc)) from None
    sys.exit(run_up(settings, flower=flower, loglevel=loglevel, workers=workers, web=web, verbose=verbose))


@cli.command()
@click.option("--polling", is_flag=True, help="Poll instead of inotify (network filesystems).")
@pass_ctx
def watch(obj: Ctx, polling: bool) -> None:
    """Watch every project inbox and enqueue inbox_event for each new task file."""
    from dispatcher.cli.client import send_task
    from dispatcher.inbox.watcher import run

    settings = obj.deployment()
    try:
        configured_url(settings)
    except DispatcherError as exc:
        config_exit(exc)
    if not polling and is_network(settings.projects_dir):
        # inotify never hears of files another machine writes over NFS/CIFS: poll (the full scan backs it up).
        logger.warning("%s is on a network filesystem: polling for new task files", settings.projects_dir)
        polling = True
    stop = threading.Event()
    try:
        # Tasks reaching done/ queue a monitor pass of the sessions holding them (one message per burst): they
        # are freed and given the next task at once, not up to monitor_interval later.
        run(settings.projects_dir, lambda p, closed: send_task(settings, "inbox_event", [p, closed]),
            lambda: send_task(settings, "full_scan"), stop=stop, polling=polling,
            on_done=lambda paths: send_task(settings, "monitor_sessions", [None, paths]))
    except KeyboardInterrupt:
        stop.set()


@cli.group("pool")
def pool_group() -> None:
    """Manage the autonomous tmux pool (sessions outside it are never touched)."""


def _tmux(obj: Ctx) -> Tmux:
    return Tmux(obj.deployment().tmux.socket_name)


@pool_group.command("create")
@pass_ctx
def pool_create(obj: Ctx) -> None:
    """Create the missing pool sessions."""
    s = obj.deployment()
    created = pool.create(_tmux(obj), s.pool, cwd=s.projects_dir if s.projects_dir.is_dir() else None)
    click.echo(f"created: {', '.join(created) or 'none (all exist)'}")
    click.echo(f"attach: {pool.attach_command(s.tmux.socket_name, s.pool)}")


@pool_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def pool_list(obj: Ctx, as_json: bool) -> None:
    """List pool sessions and what runs in them."""
    found = pool.status(_tmux(obj), obj.settings.pool)
    if as_json:
        click.echo(json.dumps([{"session": p.name, "exists": p.exists, "dead": p.dead, "command": p.command}
                               for p in found], indent=2))
        return
    for p in found:
        state = "missing" if not p.exists else ("dead" if p.dead else p.command)
        click.echo(f"{p.name:<16} {state}")
    click.echo(f"attach: {pool.attach_command(obj.settings.tmux.socket_name, obj.settings.pool)}")


@pool_group.command("kill")
@click.argument("names", nargs=-1)
@pass_ctx
def pool_kill(obj: Ctx, names: tuple[str, ...]) -> None:
    """Kill pool sessions (all, or NAMES)."""
    try:
        killed = pool.kill(_tmux(obj), obj.settings.pool, list(names) or None)
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"killed: {', '.join(killed) or 'none'}")


def _redis(obj: Ctx, required: bool) -> redis.Redis | None:
    try:
        r = client(settings=obj.deployment(), timeout=2.0)
    except DispatcherError as exc:  # no Redis configured or running for this deployment
        if required:
            config_exit(exc)
        click.echo(f"note: {exc}", err=True)
        return None
    try:
        r.ping()
    except redis.RedisError as exc:
        if required:
            raise click.ClickException(f"Redis unreachable ({exc}); is 'dispatcher up' running?") from None
        return None
    return r


@cli.command()
@click.option("--watch", "watch_", is_flag=True, help="Refresh every 2 s until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(obj: Ctx, watch_: bool, as_json: bool) -> None:
    """Sessions (state, task, model, for how long) and per-project task counts."""
    from dispatcher.flows.status import collect, render

    r = _redis(obj, required=False)
    while True:
        data = collect(obj.settings, r, _tmux(obj))
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            if watch_:
                click.clear()
            click.echo(render(data))
        if not watch_:
            return
        try:
            time.sleep(2.0)  # a refresh period for a person, not synchronisation
        except KeyboardInterrupt:
            return


@cli.command()
@click.option("-n", "count", default=50, show_default=True, help="How many recent events.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def events(obj: Ctx, count: int, follow: bool, as_json: bool) -> None:
    """Print the event log (submitted, claimed, launched, finished, failed, limited, stuck…)."""
    def show(e: ev.Event) -> None:
        click.echo(json.dumps(dataclasses.asdict(e), sort_keys=True) if as_json else e.line())

    r = _redis(obj, required=True)
    assert r is not None
    last = "$"
    for e in ev.recent(r, count):
        show(e)
        last = e.id
    if follow:
        try:
            for e in ev.follow(r, after=last if last != "$" else "$"):
                show(e)
        except KeyboardInterrupt:
            return


@cli.command()
@click.argument("task")
@pass_ctx
def retry(obj: Ctx, task: str) -> None:
    """Put a failed task (PROJECT:TASK_ID) back in its inbox; dependents stuck on it are released.

    \b
    Example:  dispatcher retry web:FIX-12
    """
    from dispatcher.flows.retry import retry_task

    r = _redis(obj, required=False)
    try:
        path = retry_task(obj.settings, r, task)
    except (DispatcherError, ClaimError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"requeued {path}")
    if r is not None:
        from dispatcher.cli.client import send_task

        send_task(obj.settings, "full_scan")


@cli.command("pause")
@click.option("--until", "until", metavar="WHEN",
              help="A duration (30m, 2h), a time of day (14:30) or a date-time (2026-11-28T09:00); "
                   "default: until 'dispatcher resume'.")
@click.option("--reason", default="", help="Shown by status and assign_next.")
@pass_ctx
def pause_cmd(obj: Ctx, until: str | None, reason: str) -> None:
    """Stop launching new tasks on the whole pool (running agents go on); 'dispatcher resume' lifts it.

    \b
    Example:  dispatcher pause --until 2h --reason "API maintenance"
    """
    r = _redis(obj, required=True)
    assert r is not None
    now = time.time()
    try:
        at = pause.parse_until(until, now) if until else math.inf
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    held = pause.pause(r, at, reason, pause.OPERATOR, account=obj.settings.host.account)
    ev.emit(r, "paused", detail=held.describe())
    click.echo(held.describe())


@cli.command("resume")
@pass_ctx
def resume_cmd(obj: Ctx) -> None:
    """Lift the pool pause (whatever its cause) and every project hold; free sessions get work again.

    \b
    Example:  dispatcher resume
    """
    from dispatcher.cli.client import send_task

    r = _redis(obj, required=True)
    assert r is not None
    lifted, projects = pause.resume(r, obj.settings.host.account)
    was = lifted.describe() if lifted is not None and lifted.until > time.time() else "not paused"
    click.echo(f"resumed ({was})" + (f"; holds lifted: {', '.join(projects)}" if projects else ""))
    ev.emit(r, "unpaused", detail=f"by operator ({was})")
    send_task(obj.settings, "full_scan")


@cli.group("hosts", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def hosts_group(ctx: click.Context, as_json: bool) -> None:
    """The hosts of the fleet: alive or lost, last heartbeat, version (docs/multi-host.md).

    \b
    Example:  dispatcher hosts
              dispatcher hosts forget build-3      (retire a lost host)
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Ctx = ctx.obj
    r = _redis(obj, required=True)
    assert r is not None
    now = time.time()
    rows: list[dict[str, Any]] = [
        {"host": h.name, "alive": h.alive(now, obj.settings.host_lost_after), "account": h.account,
         "last_seen_s": round(now - h.last_seen, 1), "version": h.version, "sessions": list(h.sessions),
         "fingerprint": h.fingerprint} for h in sorted(hosts.read_all(r).values(), key=lambda h: h.name)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no host has published a heartbeat yet (is a worker running?)")
    for row in rows:
        state = "alive" if row["alive"] else "LOST"
        click.echo(f"{row['host']:<20}{state:<7}{row['last_seen_s']:>8.0f}s ago  {row['version']:<8}"
                   f"account {row['account']:<10}{len(row['sessions'])} sessions  {row['fingerprint']}")


@hosts_group.command("forget")
@click.argument("name")
@click.pass_obj
def hosts_forget(obj: Ctx, name: str) -> None:
    """Remove a lost host from the registry (its claimed tasks were already taken back)."""
    r = _redis(obj, required=True)
    assert r is not None
    known = hosts.read_all(r)
    if name not in known:
        raise click.ClickException(f"no host {name!r} (known: {', '.join(sorted(known)) or 'none'})")
    if known[name].alive(time.time(), obj.settings.host_lost_after):
        raise click.ClickException(f"host {name!r} is alive (heartbeat {time.time() - known[name].last_seen:.0f}s "
                                   "ago): stop its workers first")
    hosts.forget(r, name)
    click.echo(f"forgot host {name}")


__all__ = ["cli", "up", "watch", "pool_group", "status", "events", "retry", "pause_cmd", "resume_cmd",
           "hosts_group"]
