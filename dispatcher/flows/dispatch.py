"""Dispatch: gate → claim the task file → lock a free session → launch → ``.dispatched``.

This is the one place that changes ownership. Every step is atomic and every
failure path gives back what it took, so ``inbox_event``, ``full_scan`` and
``assign_next`` may race on any number of workers: a task goes to at most one
session and a session gets at most one task.

Ownership of a ``.launching`` file is an ``flock`` held by the launching
process (the kernel drops it if that process dies), so recovery can tell a
live launch from an abandoned one even after Redis was emptied.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import redis

from dispatcher.inbox import files as aq
from dispatcher.core import defaults as d
from dispatcher.store import events, hosts, locks, owners, pause, settle
from dispatcher.core import keys
from dispatcher.agent import pool_state
from dispatcher.inbox import worktree
from dispatcher.store import sessions as ss
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError, DialogError, SessionError, TaskFileError, WorktreeError
from dispatcher.agent.hooks import HookLog
from dispatcher.inbox.scanner import Plan, run_scan
from dispatcher.core.screen import TRUST_DIALOG
from dispatcher.core.session_ref import SessionRef, parse
from dispatcher.store.sessions import SessionInfo, State
from dispatcher.core.taskfile import Task, is_safe_segment, parse_task
from dispatcher.inbox.reader import read_task_bytes
from dispatcher.agent.tmux import Tmux

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the agent driver needs to start one task in one session."""

    session: str  # tmux name on this host
    task: Task
    project_dir: Path
    model: str
    agent_uuid: str
    host: str = ""
    #: The project's ``.agent-queue`` (absolute) when the agent works elsewhere (a worktree); None: in its cwd.
    queue_dir: Path | None = None

    @property
    def ref(self) -> str:
        """``HOST/NAME`` of the session (hook reports and events name it so)."""
        return f"{self.host}/{self.session}" if self.host else self.session


class LaunchFn(Protocol):
    def __call__(self, spec: LaunchSpec) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """Result of one dispatch attempt (returned by the Celery tasks as JSON)."""

    status: str  # dispatched | no-task | busy | not-in-pool | paused | launch-failed | taken | missing | held | forwarded | at-limit
    session: str = ""
    task: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "session": self.session, "task": self.task, "detail": self.detail}


#: Failed-attempt counters are forgotten after a week without failures.
ATTEMPTS_TTL_S = 7 * 86400
#: A queued assign_next whose message was lost stops deduplicating after this long (beat re-sends).
ASSIGN_PENDING_TTL_S = 60


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class FileClaim:
    """An flock on a claimed ``.launching`` file, held for the whole launch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        os.close(self.fd)


def claim_is_live(path: Path) -> bool:
    """True when some live process holds the flock of this ``.launching`` file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Dispatcher:
    """Dispatch decisions over injected adapters (Redis, tmux, the launcher, a clock)."""

    def __init__(self, settings: Settings, r: "redis.Redis", tmux: Tmux, launch: LaunchFn, *,
                 enqueue_assign: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.r = r
        self.tmux = tmux
        self.launch = launch
        self.enqueue_assign = enqueue_assign
        self.clock = clock
        self.owner = owner_id()
        self.host = settings.host.name
        self.lock_ttl = d.LAUNCH_LOCK_TTL_S

    # -- sessions -------------------------------------------------------------

    def ref(self, name: str) -> SessionRef:
        """The ref of one of this host's sessions."""
        return SessionRef(self.host, name)

    def session_info(self, name: str) -> SessionInfo:
        """Current state of one of this host's pool sessions (rebuilt from tmux if Redis has none)."""
        return pool_state.read(self.r, self.tmux, self.host, name)

    def pool_infos(self) -> dict[str, SessionInfo]:
        """States of this host's pool sessions in one tmux call and one Redis round trip."""
        return pool_state.read_all(self.r, self.tmux, self.host, self.settings.pool.names())

    def is_free(self, info: SessionInfo, now: float) -> bool:
        return (info.state is State.IDLE and not info.in_cooldown(now, self.settings.pool.cooldown)
                and not locks.is_held(self.r, keys.session_lock(info.ref)))

    def fleet_free(self) -> list[SessionRef]:
        """Free sessions of every live host: this host's from tmux, the others' from Redis."""
        now = self.clock()
        out: list[SessionRef] = []
        if not self.paused_until(now):
            out = [self.ref(n) for n, info in self.pool_infos().items() if self.is_free(info, now)]
        others = [h for n, h in hosts.alive(self.r, now, self.settings.host_lost_after).items()
                  if n != self.host and pause.current(self.r, now, h.account) is None]
        refs = [SessionRef(h.name, n) for h in others for n in h.sessions]
        if not refs:
            return out
        states = ss.get_all(self.r, refs)
        pipe = self.r.pipeline(transaction=False)
        for ref in refs:
            pipe.exists(keys.session_lock(str(ref)))
        locked = dict(zip(refs, pipe.execute()))
        for ref in refs:
            info = states[ref]  # None: that host has not rebuilt it yet (after a flush); its monitor will
            if (info is not None and info.state is State.IDLE and not locked[ref]
                    and not info.in_cooldown(now, self.settings.pool.cooldown)):
                out.append(ref)
        return out

    def paused_until(self, now: float) -> float:
        """Pool-wide pause (limit, missing agent, operator): the time launching may resume, or 0."""
        held = pause.current(self.r, now, self.settings.host.account)
        return held.until if held is not None else 0.0

    def free_sessions(self) -> list[str]:
        """Free sessions of this host (names)."""
        now = self.clock()
        if self.paused_until(now):
            return []
        return [n for n, info in self.pool_infos().items() if self.is_free(info, now)]

    # -- entry points -----------------------------------------------------------

    def plan(self) -> Plan:
        """A scan pass (writing markers); what it changed goes to the event log."""
        result = run_scan(self.settings, now=self.clock(), write=True,
                          closed=lambda files: settle.closed_files(self.r, files))
        for kind, task, detail in result.changes:
            if kind in ("blocked", "invalid"):  # a task's first state: "submitted" goes before it
                project, _, name = task.partition(":")
                task_id = name[: -len(d.TASK_SUFFIX)] if name.endswith(d.TASK_SUFFIX) else name
                if is_safe_segment(project) and is_safe_segment(task_id):
                    self.announce(project, task_id, str(aq.project(self.settings.projects_dir, project)
                                                        .task_path(task_id)))
            events.emit(self.r, kind, task=task, detail=detail)
        return result

    def announce(self, project: str, task_id: str, path: str) -> None:
        """One "submitted" event per version (inode) of a task file, however often the watcher reports it."""
        events.announce(self.r, project, task_id, path)

    def fan_out(self) -> list[Outcome]:
        """Give work to every free session of the fleet: assign_next per session (on its host's queue), or inline."""
        if self.enqueue_assign is not None:
            return [Outcome("enqueued", session=str(ref)) for ref in self.fleet_free() if self.request_assign(ref)]
        free = self.free_sessions()  # inline (one process, no Celery): this host's sessions only
        if not free:
            return []
        result = self.plan()
        outcomes = []
        for name in free:
            outcome = self._assign(name, result)
            outcomes.append(outcome)
            if outcome.status == "no-task":
                break
        return outcomes

    def agent_missing(self) -> str | None:
        """Why no agent can start on this host (its executable is not installed), or None."""
        try:
            exe = shlex.split(self.settings.agent.command)[0]
        except (ValueError, IndexError):
            return f"agent.command cannot be parsed: {self.settings.agent.command!r}"
        if shutil.which(exe) is None:
            return f"agent command {exe!r} not found on PATH (install it, e.g. npm install -g @anthropic-ai/claude-code)"
        return None

    def count_attempt(self, project: str, task_id: str) -> int:
        """One more failed attempt of a task (launch failure or agent death); the count so far."""
        key = keys.attempts(project, task_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, ATTEMPTS_TTL_S)
        return int(pipe.execute()[0])

    def request_assign(self, ref: SessionRef) -> bool:
        """Enqueue ``assign_next(HOST/NAME)`` unless one is already queued (a burst of events sends one, not N)."""
        if self.enqueue_assign is None:
            if ref.host != self.host:
                return False  # inline mode cannot reach another host's panes
            self.assign_next(str(ref))
            return True
        if not self.r.set(keys.assign_pending(str(ref)), "1", nx=True, ex=ASSIGN_PENDING_TTL_S):
            return False
        self.enqueue_assign(str(ref))
        return True

    def assign_next(self, session: str) -> Outcome:
        """Give the next eligible task (in dispatch order) to ``session`` (``NAME`` or ``HOST/NAME``) if it is free."""
        try:
            ref = parse(session, default_host=self.host)
        except SessionError as exc:
            return Outcome("not-in-pool", session=str(session), detail=str(exc))
        if ref.host != self.host:
            # Never launch into another host's session: only its own workers can see its panes.
            if self.enqueue_assign is not None:
                self.enqueue_assign(str(ref))
                return Outcome("forwarded", session=str(ref), detail=f"to host {ref.host}'s queue")
            return Outcome("not-in-pool", session=str(ref), detail=f"a session of host {ref.host}, not {self.host}")
        session = ref.name
        if self.settings.pool.contains(session):
            self.r.delete(keys.assign_pending(str(ref)))  # from now on a new event may queue another
        if not self.settings.pool.contains(session):
            logger.warning("assign_next: %r is not a pool session; refusing", session)
            return Outcome("not-in-pool", session=str(ref),
                           detail="not one of " + ", ".join(self.settings.pool.names()))
        now = self.clock()
        held = pause.current(self.r, now, self.settings.host.account)
        if held is not None:
            return Outcome("paused", session=session, detail=held.describe())
        missing = self.agent_missing()
        if missing:
            # Not the task's fault: pause the pool (status shows why) instead of failing every task in turn.
            held = pause.pause(self.r, now + d.AGENT_MISSING_PAUSE_S, missing, pause.AGENT_MISSING,
                               account=self.settings.host.account)
            events.emit(self.r, "paused", session=session, detail=held.describe())
            return Outcome("paused", session=session, detail=held.describe())
        info = self.session_info(session)
        if info.state is State.MISSING:
            return Outcome("missing", session=session, detail="tmux session does not exist")
        if not self.is_free(info, now):
            return Outcome("busy", session=session, detail=f"state {info.state.value}")
        return self._assign(session, self.plan())

    def _assign(self, session: str, result: Plan) -> Outcome:
        held = set(pause.holds(self.r, self.clock()))
        for task in result.eligible:
            if task.project in held:
                continue  # the project's own problem (say, an untrusted folder): serve the others
            outcome = self.dispatch_one(task, session)
            if outcome.status == "held":
                held.add(task.project)  # the session is still free: give it another project's task
                continue
            if outcome.status in ("taken",):
                continue  # another worker got this task: try the next one
            if outcome.status == "at-limit":
                held.add(task.project)  # its slots filled since the scan: the other projects go ahead
                continue
            return outcome
        detail = "nothing eligible" + (f" (held: {', '.join(sorted(held))})" if held else "")
        return Outcome("no-task", session=session, detail=detail)

    # -- one dispatch -------------------------------------------------------------

    def dispatch_one(self, task: Task, session: str) -> Outcome:
        """Claim ``task`` and launch it in ``session``; give everything back on failure."""
        held = locks.try_acquire(self.r, keys.session_lock(str(self.ref(session))), self.lock_ttl, self.owner)
        if held is None:
            return Outcome("busy", session=session, detail="session locked by another worker")
        try:
            now = self.clock()
            info = self.session_info(session)
            if not (info.state is State.IDLE and not info.in_cooldown(now, self.settings.pool.cooldown)):
                return Outcome("busy", session=session, detail=f"state {info.state.value}")
            try:
                launching = self._claim_within_limit(task)
            except ClaimError as exc:
                return Outcome("taken", session=session, task=str(task.key), detail=str(exc))
            if launching is None:
                return Outcome("at-limit", session=session, task=str(task.key),
                               detail=f"project {task.project} has no free slot (max_parallel)")
            # Ownership any host can check (an flock proves nothing across machines).
            owners.take(self.r, task.project, task.id, info.ref)
            try:
                claim = FileClaim(launching)
            except OSError as exc:  # vanished or swapped between claim and lock: give it back if we can
                logger.warning("cannot lock %s: %s", launching, exc)
                return Outcome("taken", session=session, task=str(task.key), detail=str(exc))
            try:
                return self._launch_claimed(task, launching, session, info)
            finally:
                claim.close()
        finally:
            held.release()

    def running_count(self, project: str) -> int:
        """Tasks of ``project`` claimed or running now (its ``.launching`` + ``.dispatched`` files)."""
        inbox = aq.project(self.settings.projects_dir, project).inbox
        try:
            names = os.listdir(inbox)
        except OSError:
            return 0
        ends = (d.TASK_SUFFIX + d.LAUNCHING, d.TASK_SUFFIX + d.DISPATCHED)
        return sum(1 for n in names if n.endswith(ends) and not n.startswith("."))

    def _claim_within_limit(self, task: Task) -> Path | None:
        """Claim ``task`` unless its project is at its ``max_parallel`` (None then); ClaimError if taken.

        The plan already capped the project, but two workers may both have seen the last free
        slot: count and claim under a short per-project Redis lock (a rename is all it guards,
        and the lock is shared by every host), so the count one sees includes the other's claim.
        """
        limit = self.settings.limit_for(task.project)
        if not limit:
            return aq.claim(task.path)
        lock = self.r.lock(keys.project_claim_lock(task.project), timeout=d.PROJECT_CLAIM_LOCK_TTL_S,
                           blocking_timeout=d.PROJECT_CLAIM_LOCK_TTL_S, sleep=0.02, thread_local=False)
        if not lock.acquire(blocking=True):
            return None
        try:
            if self.running_count(task.project) >= limit:
                return None
            return aq.claim(task.path)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # expired (a very slow disk): the rename is done anyway
                logger.warning("project claim lock of %s expired before release", task.project)

    def _launch_claimed(self, task: Task, launching: Path, session: str, info: SessionInfo) -> Outcome:
        key = str(task.key)
        try:
            # Launch what was claimed, not what the path held when it was scanned.
            data, mtime = read_task_bytes(launching, self.settings.max_task_bytes)
            if (mtime, len(data)) != (task.mtime, task.size):  # written to since it was scanned: let it settle
                raise TaskFileError("the file changed after it was scanned (still being written?)")
            task = parse_task(data, task_id=task.id, project=task.project, path=task.path, mtime=mtime)
        except TaskFileError as exc:
            aq.release(launching)
            owners.drop(self.r, task.project, task.id, info.ref)
            return Outcome("taken", session=session, task=key, detail=f"changed while claimed: {exc.reason}")
        self.announce(task.project, task.id, str(launching))  # the watcher's event may still be queued
        events.emit(self.r, "claimed", task=key, session=info.ref)
        project_dir = self.settings.projects_dir / task.project
        queue_dir: Path | None = None
        cfg = self.settings.project_settings(task.project)
        if cfg.isolation == "worktree":
            try:
                project_dir = worktree.create(project_dir, task.id, cfg.worktree)
            except WorktreeError as exc:
                return self._worktree_failed(task, launching, info, exc)
            queue_dir = (self.settings.projects_dir / task.project).resolve() / d.QUEUE_DIR
        model = self.settings.agent.model_for(task.priority.value)
        agent_uuid = str(uuid.uuid4())
        info = pool_state.transition(self.r, self.tmux, info, State.LAUNCHING, project=task.project, task=task.id,
                                     model=model, agent_uuid=agent_uuid, detail="", idle_since=0.0,
                                     hooks_after=HookLog(self.r).last_id(info.ref))
        spec = LaunchSpec(session, task, project_dir, model, agent_uuid, self.host, queue_dir=queue_dir)
        try:
            self.launch(spec)
        except DialogError as exc:
            if exc.dialog == TRUST_DIALOG:
                return self._project_untrusted(task, launching, info)
            return self._launch_failed(task, launching, info, exc)
        except (SessionError, OSError) as exc:  # SessionError: also the session vanished under us
            return self._launch_failed(task, launching, info, exc)
        try:
            aq.promote(launching)
        except ClaimError as exc:  # a quick agent already moved it to done/: the monitor will see that
            logger.info("%s: not promoted (%s); the agent already moved it", key, exc)
        info = pool_state.transition(self.r, self.tmux, info, State.WORKING)
        self.r.delete(keys.attempts(task.project, task.id))
        events.emit(self.r, "launched", task=key, session=info.ref, detail=f"model {model}")
        return Outcome("dispatched", session=session, task=key, detail=f"model {model}")

    def _worktree_failed(self, task: Task, launching: Path, info: SessionInfo, exc: WorktreeError) -> Outcome:
        """No worktree for the task: it fails with the reason (kept, retryable); the session stays free."""
        key = str(task.key)
        reason = f"cannot make the task's git worktree: {exc}"
        logger.warning("%s: %s", key, reason)
        aq.fail(launching, reason)
        owners.drop(self.r, task.project, task.id, info.ref)
        events.emit(self.r, "failed", task=key, session=info.ref, detail=reason)
        return Outcome("launch-failed", session=info.name, task=key, detail=reason)

    def _project_untrusted(self, task: Task, launching: Path, info: SessionInfo) -> Outcome:
        """The agent does not trust the project folder: hold the project (with the fix), not the task or session."""
        key = str(task.key)
        folder = os.path.realpath(self.settings.projects_dir / task.project)  # the path the agent sees as its cwd
        now = self.clock()
        reason = (f"Claude Code does not trust the folder {folder}: accept it once by running `claude` in that "
                  f"directory (as the agents' user), or add \"projects\": {{\"{folder}\": "
                  f"{{\"hasTrustDialogAccepted\": true}}}} to ~/.claude.json (or $CLAUDE_CONFIG_DIR/.claude.json)")
        aq.release(launching)  # back to pending, no attempt counted: nothing is wrong with the task
        owners.drop(self.r, task.project, task.id, info.ref)
        pause.hold(self.r, task.project, reason, now + d.PROJECT_HOLD_S)
        logger.warning("%s: project %s held until %s: %s", key, task.project, time.ctime(now + d.PROJECT_HOLD_S),
                       reason)
        events.emit(self.r, "held", task=key, session=info.ref, detail=reason)
        pool_state.reset_pane(self.tmux, info.name, self.settings)
        pool_state.set_idle(self.r, self.tmux, info, now=now, detail=f"project {task.project} held: folder not trusted")
        return Outcome("held", session=info.name, task=key, detail=reason)

    def _launch_failed(self, task: Task, launching: Path, info: SessionInfo, exc: Exception) -> Outcome:
        key = str(task.key)
        if type(exc) is SessionError:
            # The tmux session vanished (killed, tmux restarted): neither the task's fault nor the agent's.
            aq.release(launching)
            owners.drop(self.r, task.project, task.id, info.ref)
            events.emit(self.r, "launch-failed", task=key, session=info.ref, detail=str(exc))
            pool_state.set_idle(self.r, self.tmux, info, now=self.clock(), detail=str(exc)[:500])
            return Outcome("launch-failed", session=info.name, task=key, detail=str(exc))
        attempts = self.count_attempt(task.project, task.id)
        reason = f"launch failed in {info.name} (attempt {attempts}/{self.settings.max_launch_attempts}): {exc}"
        logger.warning("%s: %s", key, reason)
        if attempts >= self.settings.max_launch_attempts:
            aq.fail(launching, reason)
            self.r.delete(keys.attempts(task.project, task.id))
            events.emit(self.r, "failed", task=key, session=info.ref, detail=reason)
        else:
            aq.release(launching)
            events.emit(self.r, "launch-failed", task=key, session=info.ref, detail=reason)
        owners.drop(self.r, task.project, task.id, info.ref)
        pool_state.reset_pane(self.tmux, info.name, self.settings)
        pool_state.set_idle(self.r, self.tmux, info, failed=True, now=self.clock(), detail=str(exc)[:500])
        return Outcome("launch-failed", session=info.name, task=key, detail=reason)
