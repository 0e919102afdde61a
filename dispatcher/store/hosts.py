"""Hosts of one fleet: identity, the registry of heartbeats in Redis, and who is alive.

A host owns a tmux server, its pool and its agents. Every worker process of a
host publishes the host's heartbeat; a host whose heartbeat is older than
``host_lost_after`` is lost and the cluster takes its work back (recovery.py).

A host name is owned by one deployment at a time: the registry keeps each
host's *fingerprint* (machine, state dir, tmux socket), and a second
deployment that would take a live host's name is refused at start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from dispatcher.core import keys
from dispatcher.core.errors import HostConflictError
from dispatcher.core.version import __version__

logger = logging.getLogger(__name__)

#: Celery queue every host's workers consume besides their own (cluster-wide work).
CLUSTER_QUEUE = "aq.cluster"


def host_queue(host: str) -> str:
    """The Celery queue of one host: everything that touches its tmux panes."""
    return f"aq.host.{host}"


@dataclass(frozen=True)
class HostInfo:
    """One host as its heartbeat describes it."""

    name: str
    fingerprint: str
    account: str = "default"
    sessions: tuple[str, ...] = ()
    version: str = __version__
    started: float = 0.0
    last_seen: float = 0.0
    pid: int = 0

    def alive(self, now: float, lost_after: float) -> bool:
        """True while the last heartbeat is younger than ``lost_after`` seconds."""
        return now - self.last_seen < lost_after

    def to_json(self) -> str:
        data = asdict(self)
        data["sessions"] = list(self.sessions)
        return json.dumps(data, sort_keys=True)


def from_json(name: str, raw: str) -> HostInfo | None:
    """Decode one registry entry; a malformed one is ignored (logged)."""
    try:
        data = json.loads(raw)
        return HostInfo(name=name, fingerprint=str(data.get("fingerprint", "")),
                        account=str(data.get("account", "default")),
                        sessions=tuple(str(s) for s in data.get("sessions", ())),
                        version=str(data.get("version", "")), started=float(data.get("started", 0)),
                        last_seen=float(data.get("last_seen", 0)), pid=int(data.get("pid", 0)))
    except (ValueError, TypeError, AttributeError) as exc:
        logger.warning("host registry entry %r unreadable: %s", name, exc)
        return None


def fingerprint(state_dir: os.PathLike[str] | str, socket_name: str) -> str:
    """What makes two processes the same deployment of a host: machine, state dir and tmux socket."""
    return f"{socket.gethostname()}:{os.path.realpath(state_dir)}:{socket_name}"


def read_all(r: redis.Redis) -> dict[str, HostInfo]:
    """Every registered host (alive or not), by name."""
    raw: dict[Any, Any] = r.hgetall(keys.HOSTS) or {}
    out: dict[str, HostInfo] = {}
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else str(name)
        value = value.decode() if isinstance(value, bytes) else str(value)
        info = from_json(name, value)
        if info is not None:
            out[name] = info
    return out


def alive(r: redis.Redis, now: float, lost_after: float) -> dict[str, HostInfo]:
    """Hosts whose heartbeat is fresh."""
    return {n: h for n, h in read_all(r).items() if h.alive(now, lost_after)}


# Publish only when the name is free, stale, or already ours (same fingerprint): one atomic step.
_PUBLISH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and old['fingerprint'] ~= ARGV[2]
     and (tonumber(ARGV[4]) - tonumber(old['last_seen'] or 0)) < tonumber(ARGV[5]) then
    return cur
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return false
"""


def publish(r: redis.Redis, info: HostInfo, *, now: float, lost_after: float) -> None:
    """Record a heartbeat; raise HostConflictError when a live host of another deployment has the name."""
    me = HostInfo(**{**asdict(info), "sessions": info.sessions, "last_seen": now})
    other = r.eval(_PUBLISH, 1, keys.HOSTS, me.name, me.fingerprint, me.to_json(), repr(now), repr(lost_after))
    if other:
        text = other.decode() if isinstance(other, bytes) else str(other)
        theirs = from_json(me.name, text)
        seen = f"{now - theirs.last_seen:.0f}s ago" if theirs else "recently"
        raise HostConflictError(
            f"host name {me.name!r} is taken by a live deployment ({theirs.fingerprint if theirs else '?'}, "
            f"last heartbeat {seen}); this one is {me.fingerprint}. Give each machine/deployment its own name: "
            f"host.name in dispatcher.yaml or AQ_HOST=<name> (or stop the other one and wait {lost_after:.0f}s)")


def forget(r: redis.Redis, name: str) -> None:
    """Remove a host from the registry (an operator retiring a machine)."""
    r.hdel(keys.HOSTS, name)


@dataclass
class Heartbeat:
    """A daemon thread publishing one host's heartbeat every ``interval`` seconds."""

    r: redis.Redis
    info: HostInfo
    interval: float
    lost_after: float
    clock: Callable[[], float] = time.time
    on_beat: Callable[[], object] | None = None
    #: False once the process this heartbeat speaks for has stopped (an in-process test worker): beating ends.
    alive: Callable[[], bool] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        """One heartbeat (and whatever the host renews with it)."""
        publish(self.r, self.info, now=self.clock(), lost_after=self.lost_after)
        if self.on_beat is not None:
            self.on_beat()

    def start(self) -> Heartbeat:
        self.beat()  # the first one in the caller: a name conflict is raised right here
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.info.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.alive is not None and not self.alive():
                return
            try:
                self.beat()
            except HostConflictError as exc:
                logger.error("%s", exc)
            except Exception:  # Redis down for a moment: keep beating, the host is lost only after lost_after
                logger.exception("heartbeat of %s failed", self.info.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
