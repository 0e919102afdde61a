"""The operator's subcommands (web, doctor, notify, logs), registered on the CLI group.

The flows behind them (doctor, notify, upview) are imported inside each subcommand: every
``dispatcher`` call imports this module, and most never run these.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time

import click

from dispatcher.cli.group import Ctx, cli, pass_ctx
from dispatcher.store.redis_conn import client
from dispatcher.web import serve


@cli.command()
@click.option("--address", help="Listen address (default: web.address, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: web.port, 5556).")
@pass_ctx
def web(obj: Ctx, address: str | None, port: int | None) -> None:
    """The fleet page: sessions with their live screens, tasks, dependency graph, events, actions.

    \b
    Basic auth is always required: FLOWER_BASIC_AUTH=user:password, else a
    password generated once into <state_dir>/web-auth (mode 0600).
    Example:  dispatcher web && open http://127.0.0.1:5556/
    """
    logging.getLogger("dispatcher.web").setLevel(logging.INFO)
    s = obj.settings
    address = address or s.web.address
    if address not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: the fleet page listens on {address}; basic auth over plain HTTP can be sniffed: "
                   "put it behind TLS (a reverse proxy) or keep it on 127.0.0.1", err=True)
    serve(s, address, s.web.port if port is None else port)
    sys.exit(0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def doctor(obj: Ctx, as_json: bool) -> None:
    """Check tmux, the agent and its config, Redis, hooks, auth, disk and hosts; say how to fix each problem.

    \b
    Exit 0 only when every check passes (warnings do not fail).
    Example:  dispatcher doctor || dispatcher doctor --json | jq '.checks[] | select(.status=="fail")'
    """
    from dispatcher.flows import doctor as doc

    checks = doc.run(obj.settings)
    click.echo(json.dumps(doc.as_json(checks), indent=2) if as_json else doc.render(checks))
    sys.exit(0 if all(c.passed for c in checks) else 1)


@cli.command("notify")
@click.option("--test", "test_", is_flag=True, help="Send one test notification now and exit (1 if it failed).")
@pass_ctx
def notify_cmd(obj: Ctx, test_: bool) -> None:
    """Send notifications (notify.command / notify.webhook) for the events a human must act on.

    \b
    'dispatcher up' runs this when notify is configured; run it yourself where
    the pieces run separately (docker-compose, systemd). Several hosts may run
    it: each event is notified once.
    Example:  dispatcher notify --test
    """
    from dispatcher.flows import notify

    s = obj.settings.notify
    if not s.enabled:
        raise click.ClickException("nothing to do: set notify.command and/or notify.webhook in dispatcher.yaml")
    if test_:
        data = notify.payload("0-0", {"kind": "test", "detail": "a test notification from dispatcher notify --test",
                                      "time": time.time()}, socket.gethostname())
        errors = notify.deliver(s, data)
        click.echo("\n".join(errors) if errors else "sent")
        sys.exit(1 if errors else 0)
    stop = threading.Event()
    try:
        notify.follow(s, client(settings=obj.settings, timeout=5.0), stop)
    except KeyboardInterrupt:
        stop.set()


@cli.command()
@click.argument("component", required=False)
@click.option("-n", "lines", default=50, show_default=True, help="How many recent lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@pass_ctx
def logs(obj: Ctx, component: str | None, lines: int, follow: bool) -> None:
    """Show the logs 'dispatcher up' keeps for its components (worker-0, beat, watcher, flower, web, notify).

    \b
    Without COMPONENT: the last lines of each.
    Example:  dispatcher logs -f worker-0
    """
    from dispatcher.flows import upview

    s = obj.settings
    names = upview.components(s)
    if component is None:
        if follow:
            raise click.UsageError("--follow needs a COMPONENT")
        if not names:
            click.echo(f"no logs in {upview.log_dir(s)} (they appear while 'dispatcher up' runs)")
        for name in names:
            click.echo(f"==> {name} <==")
            click.echo("\n".join(upview.read_log(s, name, lines)))
        return
    if component not in names:
        raise click.BadParameter(f"no log for {component!r}; there are: {', '.join(names) or 'none'}",
                                 param_hint="COMPONENT")
    click.echo("\n".join(upview.read_log(s, component, lines)))
    if follow:
        stop = threading.Event()
        try:
            for line in upview.follow_log(s, component, stop):
                click.echo(line)
        except KeyboardInterrupt:
            stop.set()
