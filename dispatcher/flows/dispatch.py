"""Dispatch: gate → lock a free session → claim the task → launch → ``.dispatched``.

Every step is atomic and every failure path gives back what it took, so
``inbox_event``, ``full_scan`` and ``assign_next`` may race on any number of
workers: a task goes to at most one session and a session gets at most one task.
How a task is claimed, proved owned and given back is flows/claim.py's; how a
launch reaches the agent driver is flows/launch.py's.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import redis

from dispatcher.agent import pool, pool_state
from dispatcher.agent.installed import INSTALL_HINT, agent_missing
from dispatcher.agent.warm import read_tag
from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.errors import ClaimError, DialogError, SessionError, TaskFileError, WorktreeError
from dispatcher.core.screen import TRUST_DIALOG
from dispatcher.core.session_ref import SessionRef, parse
from dispatcher.core.taskfile import Task, is_safe_segment, parse_task
from dispatcher.flows import claim as cl
from dispatcher.flows import ready, warm
from dispatcher.flows.launch import LaunchSpec, fitting_warm
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox import worktree
from dispatcher.inbox.reader import read_task_bytes
from dispatcher.inbox.scanner import Plan, run_scan
from dispatcher.store import attempts, events, hosts, locks, pause, running, settle
from dispatcher.store import sessions as ss
from dispatcher.store.hook_log import HookLog
from dispatcher.store.sessions import SessionInfo, State

logger = logging.getLogger(__name__)


class Status(str, Enum):
    """What one dispatch attempt came to (the value is what the Celery tasks return as JSON)."""

    DISPATCHED = "dispatched"
    NO_TASK = "no-task"
    BUSY = "busy"
    NOT_IN_POOL = "not-in-pool"
    PAUSED = "paused"
    LAUNCH_FAILED = "launch-failed"
    TAKEN = "taken"  # another worker claimed the task first (or it vanished)
    MISSING = "missing"
    HELD = "held"  # the task's project is held (e.g. an untrusted folder)
    FORWARDED = "forwarded"  # another host's session: sent to that host's queue
    AT_LIMIT = "at-limit"  # the project's max_parallel is reached
    ENQUEUED = "enqueued"  # fan-out queued an assign_next for the session

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    """Result of one dispatch attempt (returned by the Celery tasks as JSON)."""

    status: Status
    session: str = ""
    task: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status.value, "session": self.session, "task": self.task, "detail": self.detail}


#: A queued assign_next whose message was lost stops deduplicating after this long (beat re-sends).
ASSIGN_PENDING_TTL_S = d.ASSIGN_PENDING_TTL_S


class Dispatcher:
    """Dispatch decisions over injected adapters (``Ports``: Redis, tmux, the launcher, a clock)."""

    def __init__(self, ports: Ports, *, enqueue_assign: Callable[[str], None] | None = None) -> None:
        self.ports = ports
        # The ports under their own names (Ports is frozen: these never diverge from it).
        self.settings, self.r, self.tmux = ports.settings, ports.r, ports.tmux
        self.launch, self.clock, self.host = ports.launch, ports.clock, ports.host
        self.enqueue_assign = enqueue_assign

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
                and not cl.session_locked(self.r, info.ref))

    def fleet_free(self) -> list[SessionRef]:
        """Free sessions of every live host: this host's from tmux, the others' from Redis."""
        now = self.clock()
        out: list[SessionRef] = []
        if not self.paused_until(now):
            out = [self.ref(n) for n in self._warm_first(
                [n for n, info in self.pool_infos().items() if self.is_free(info, now)])]
        others = [h for n, h in hosts.alive(self.r, now, self.settings.host_lost_after).items()
                  if n != self.host and pause.current(self.r, now, h.account) is None]
        refs = [SessionRef(h.name, n) for h in others for n in h.sessions]
        if not refs:
            return out
        states = ss.get_all(self.r, refs)
        locked = dict(zip(refs, locks.sessions_locked(self.r, [str(ref) for ref in refs])))
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

    def _warm_first(self, names: list[str]) -> list[str]:
        """Free sessions holding a warm agent first: a new task goes where a paste is all it takes."""
        if not warm.enabled(self):
            return names
        return sorted(names, key=lambda n: read_tag(self.tmux, n) is None)

    # -- entry points -----------------------------------------------------------

    def plan(self) -> Plan:
        """A scan pass (writing markers and the ready index); what it changed goes to the event log."""
        ticket = ready.begin(self)
        scan_token = running.begin_scan(self.r)
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
        ready.publish(self, result, ticket)
        # The running hashes' safety net and builder (store/running.py): a file that runs without an entry (moved
        # by hand) is counted again, a lost hash is built; an entry without a file is the claimers' to prune.
        seen: dict[str, list[str]] = {p: [] for p in result.projects}
        for state in ("launching", "dispatched"):
            for project, task_id in result.in_flight.get(state, []):
                seen.setdefault(project, []).append(task_id)
        running.after_scan(self.r, scan_token, seen)
        return result

    def announce(self, project: str, task_id: str, path: str) -> None:
        """One "submitted" event per version (inode) of a task file, however often the watcher reports it."""
        events.announce(self.r, project, task_id, path)

    def fan_out(self, limit: int | None = None) -> list[Outcome]:
        """Give work to every free session of the fleet: assign_next per session (on its host's queue), or inline.

        ``limit``: ask at most that many sessions (one new file is work for one session: asking all of them
        sent N messages whose N-1 losers each re-planned from the files). With a limit, the first session
        asked is served in this process when it is this host's (one Celery round trip less); a session
        that cannot take the task after all passes the request on (:meth:`assign_next`).
        Without Celery (inline) every free session of this host is served in order; ``limit`` is ignored.
        """
        if self.enqueue_assign is not None:
            out: list[Outcome] = []
            for ref in self.fleet_free():
                if limit is not None and len(out) >= limit:
                    break
                outcome = self.serve(ref) if limit is not None else self.queue_assign(ref)
                if outcome is not None:
                    out.append(outcome)
            return out
        free = self._warm_first(self.free_sessions())  # inline (one process, no Celery): this host's only
        if not free:
            return []
        result = self.plan()
        outcomes = []
        for name in free:
            outcome = self._assign(name, result)
            outcomes.append(outcome)
            if outcome.status is Status.NO_TASK:
                break
        return outcomes

    def agent_missing(self) -> str | None:
        """Why no agent can start on this host (its executable is not installed), or None."""
        try:
            missing = agent_missing(self.settings.agent.command)
        except ValueError:
            return f"agent.command cannot be parsed: {self.settings.agent.command!r}"
        return f"{missing} (install it, e.g. {INSTALL_HINT})" if missing else None

    def serve(self, ref: SessionRef) -> Outcome | None:
        """Give ``ref`` its next task: in this process when it is this host's session (one Celery message less:
        the caller was already going to wait for it), else through its host's queue. None: a request for it is
        already queued (its assign_next will serve it)."""
        if self.enqueue_assign is None or ref.host != self.host:
            return self.queue_assign(ref)
        if not self._mark_requested(ref):
            return None
        return self.assign_next(str(ref))

    def queue_assign(self, ref: SessionRef) -> Outcome | None:
        """:meth:`request_assign`, as an outcome (None: one was already queued)."""
        return Outcome(Status.ENQUEUED, session=str(ref)) if self.request_assign(ref) else None

    def request_assign(self, ref: SessionRef) -> bool:
        """Enqueue ``assign_next(HOST/NAME)`` unless one is already queued (a burst of events sends one, not N)."""
        if self.enqueue_assign is None:
            if ref.host != self.host:
                return False  # inline mode cannot reach another host's panes
            self.assign_next(str(ref))
            return True
        if not self._mark_requested(ref):
            return False
        self.enqueue_assign(str(ref))
        return True

    def _mark_requested(self, ref: SessionRef) -> bool:
        """Note that ``ref`` has been asked for work (cleared when its assign_next starts); False: it already was."""
        return bool(self.r.set(keys.assign_pending(str(ref)), "1", nx=True, ex=ASSIGN_PENDING_TTL_S))

    def assign_next(self, session: str) -> Outcome:
        """Give the next eligible task (in dispatch order) to ``session`` (``NAME`` or ``HOST/NAME``) if it is free."""
        return self._pass_on(self._serve(session))

    def _serve(self, session: str) -> Outcome:
        try:
            ref = parse(session, default_host=self.host)
        except SessionError as exc:
            return Outcome(Status.NOT_IN_POOL, session=str(session), detail=str(exc))
        if ref.host != self.host:
            # Never launch into another host's session: only its own workers can see its panes.
            if self.enqueue_assign is not None:
                self.enqueue_assign(str(ref))
                return Outcome(Status.FORWARDED, session=str(ref), detail=f"to host {ref.host}'s queue")
            return Outcome(Status.NOT_IN_POOL, session=str(ref),
                           detail=f"a session of host {ref.host}, not {self.host}")
        session = ref.name
        if not self.settings.pool.contains(session):
            logger.warning("assign_next: %r is not a pool session; refusing", session)
            return Outcome(Status.NOT_IN_POOL, session=str(ref),
                           detail="not one of " + ", ".join(self.settings.pool.names()))
        now = self.clock()
        pipe = self.r.pipeline(transaction=False)  # one round trip for both
        pipe.delete(keys.assign_pending(str(ref)))  # from now on a new event may queue another
        pause.queue_current(pipe, self.settings.host.account)
        held = pause.in_force(pipe.execute()[1], now)
        if held is not None:
            return Outcome(Status.PAUSED, session=session, detail=held.describe())
        missing = self.agent_missing()
        if missing:
            # Not the task's fault: pause the pool (status shows why) instead of failing every task in turn.
            held = pause.pause(self.r, now + d.AGENT_MISSING_PAUSE_S, missing, pause.AGENT_MISSING,
                               account=self.settings.host.account)
            events.emit(self.r, "paused", session=session, detail=held.describe())
            return Outcome(Status.PAUSED, session=session, detail=held.describe())
        info = self.session_info(session)
        if info.state is State.MISSING:
            return Outcome(Status.MISSING, session=session, detail="tmux session does not exist")
        if not self.is_free(info, now):
            return Outcome(Status.BUSY, session=session, detail=f"state {info.state.value}")
        if not ready.is_complete(self):  # flushed, never built, or a dependency got done: scan (and rebuild)
            return self._assign(session, self.plan())
        outcome = self._assign(session, None)
        if outcome.status is Status.NO_TASK:  # the index is a hint: before saying so, ask the files
            outcome = self._assign(session, self.plan())
        if outcome.status is Status.NO_TASK:
            warm.warm_free(self)  # this session is free and nothing waits: (re-)warm the free sessions
        return outcome

    def _pass_on(self, outcome: Outcome) -> Outcome:
        """The session was asked for a task it could not take (taken meanwhile, vanished, failed to launch):
        ask one other free session, so the task that asked for it is not left until the next scan."""
        if outcome.status in (Status.BUSY, Status.MISSING, Status.LAUNCH_FAILED) and self.enqueue_assign is not None:
            for ref in self.fleet_free():
                if self.request_assign(ref):
                    break
        return outcome

    def _assign(self, session: str, result: Plan | None) -> Outcome:
        """Try ``result.eligible`` in order — or, without a plan, the ready index's candidates."""
        held = set(pause.holds(self.r, self.clock()))
        tasks = result.eligible if result is not None else ready.candidates(self, held)
        for task in tasks:
            if task.project in held:
                continue  # the project's own problem (say, an untrusted folder): serve the others
            outcome = self.dispatch_one(task, session)
            ready.forget_if_claimed(self, task)  # claimed for good: its index entry goes
            if outcome.status is Status.HELD:
                held.add(task.project)  # the session is still free: give it another project's task
                continue
            if outcome.status is Status.TAKEN:
                continue  # another worker got this task: try the next one
            if outcome.status is Status.AT_LIMIT:
                held.add(task.project)  # its slots filled since the scan: the other projects go ahead
                continue
            return outcome
        detail = "nothing eligible" + (f" (held: {', '.join(sorted(held))})" if held else "")
        return Outcome(Status.NO_TASK, session=session, detail=detail)

    # -- one dispatch -------------------------------------------------------------

    def dispatch_one(self, task: Task, session: str) -> Outcome:
        """Claim ``task`` and launch it in ``session``; give everything back on failure."""
        held = cl.lock_session(self.r, str(self.ref(session)))
        if held is None:
            return Outcome(Status.BUSY, session=session, detail="session locked by another worker")
        try:
            now = self.clock()
            # Again under the lock (another worker may have launched into it); that it exists was just seen.
            info = pool_state.read_stored(self.r, self.tmux, self.host, session)
            if not (info.state is State.IDLE and not info.in_cooldown(now, self.settings.pool.cooldown)):
                return Outcome(Status.BUSY, session=session, detail=f"state {info.state.value}")
            try:
                claim = cl.take(self.r, self.settings, task, info.ref)
            except ClaimError as exc:
                return Outcome(Status.TAKEN, session=session, task=str(task.key), detail=str(exc))
            if claim is None:
                return Outcome(Status.AT_LIMIT, session=session, task=str(task.key),
                               detail=f"project {task.project} has no free slot (max_parallel)")
            try:
                return self._launch_claimed(task, claim, session, info)
            finally:
                claim.close()
        finally:
            held.release()

    def _launch_claimed(self, task: Task, claim: cl.Claim, session: str, info: SessionInfo) -> Outcome:
        key = str(task.key)
        launching = claim.path
        try:
            # Launch what was claimed, not what the path held when it was scanned.
            data, mtime = read_task_bytes(launching, self.settings.max_task_bytes)
            if (mtime, len(data)) != (task.mtime, task.size):  # written to since it was scanned: let it settle
                raise TaskFileError("the file changed after it was scanned (still being written?)")
            task = parse_task(data, task_id=task.id, project=task.project, path=task.path, mtime=mtime)
        except TaskFileError as exc:
            claim.release()
            return Outcome(Status.TAKEN, session=session, task=key, detail=f"changed while claimed: {exc.reason}")
        cfg = self.settings.project_settings(task.project)
        hooks_after = self._claimed_events(task, launching, info, read_hooks=cfg.isolation != "worktree")
        project_dir = self.settings.projects_dir / task.project
        queue_dir: Path | None = None
        if cfg.isolation == "worktree":
            try:
                project_dir = worktree.create(project_dir, task.id, cfg.worktree)
            except WorktreeError as exc:
                return self._worktree_failed(task, claim, info, exc)
            queue_dir = (self.settings.projects_dir / task.project).resolve() / d.QUEUE_DIR
        model = self.settings.agent.model_for(task.priority.value)
        spec = LaunchSpec(session, task, project_dir, model, str(uuid.uuid4()), self.host, queue_dir=queue_dir)
        if warm.enabled(self):
            spec = fitting_warm(self.settings, self.r, self.tmux, spec)  # its agent's id, if it takes the task
        # hooks_after: from now on; a warm agent's start-up reports are older, never this task's proof.
        info = pool_state.transition(self.r, self.tmux, info, State.LAUNCHING, since=self.clock(),
                                     project=task.project, task=task.id, model=model, agent_uuid=spec.agent_uuid,
                                     detail="", idle_since=0.0,
                                     hooks_after=hooks_after or HookLog(self.r).last_id(info.ref))
        try:
            launched = self.launch(spec)
        except DialogError as exc:
            if exc.dialog == TRUST_DIALOG:
                return self._project_untrusted(task, claim, info)
            return self._launch_failed(task, claim, info, exc)
        except (SessionError, OSError) as exc:  # SessionError: also the session vanished under us
            return self._launch_failed(task, claim, info, exc)
        try:
            claim.promote()
        except ClaimError as exc:  # a quick agent already moved it to done/: the monitor will see that
            logger.info("%s: not promoted (%s); the agent already moved it", key, exc)
        replaced = {"agent_uuid": launched} if launched and launched != spec.agent_uuid else {}
        info = pool_state.transition(self.r, self.tmux, info, State.WORKING, since=self.clock(), **replaced)
        how = f"model {model}" + (" (warm agent)" if spec.warm is not None and not replaced else "")
        pipe = self.r.pipeline(transaction=False)  # one round trip for both
        attempts.forget(pipe, task.project, task.id)
        events.emit(pipe, "launched", task=key, session=info.ref, detail=how)
        try:
            pipe.execute()
        except redis.RedisError:  # the attempt counter outlives its TTL at worst; the event is for people
            logger.exception("could not record the launch of %s", key)
        warm.remember(self, task.project, task.priority.value)
        return Outcome(Status.DISPATCHED, session=session, task=key, detail=how)

    def _claimed_events(self, task: Task, launching: Path, info: SessionInfo, *, read_hooks: bool) -> str | None:
        """"submitted" (the watcher's event may still be queued) then "claimed", in one round trip (a pipeline keeps
        their order) — with the newest hook report id of the session (older reports are not about the agent about
        to start) when ``read_hooks`` (no worktree to make first, which may take long). None: not read."""
        key = str(task.key)
        pipe = self.r.pipeline(transaction=False)
        submitted = events.announce_args(task.project, task.id, str(launching))
        if submitted is not None:
            pipe.eval(*submitted)
        events.emit(pipe, "claimed", task=key, session=info.ref)
        if read_hooks:
            HookLog.queue_last_id(pipe, info.ref)
        try:
            replies = pipe.execute()
        except redis.RedisError:  # events are for people; the hook id is read again on its own
            logger.exception("could not record the claim of %s", key)
            return None
        if submitted is not None and replies[0]:
            logger.info("event submitted task=%s", key)
        return HookLog.last_id_of(replies[-1]) if read_hooks else None

    def _worktree_failed(self, task: Task, claim: cl.Claim, info: SessionInfo, exc: WorktreeError) -> Outcome:
        """No worktree for the task: it fails with the reason (kept, retryable); the session stays free."""
        key = str(task.key)
        reason = f"cannot make the task's git worktree: {exc}"
        logger.warning("%s: %s", key, reason)
        claim.fail(reason)
        events.emit(self.r, "failed", task=key, session=info.ref, detail=reason)
        return Outcome(Status.LAUNCH_FAILED, session=info.name, task=key, detail=reason)

    def _project_untrusted(self, task: Task, claim: cl.Claim, info: SessionInfo) -> Outcome:
        """The agent does not trust the project folder: hold the project (with the fix), not the task or session."""
        key = str(task.key)
        folder = os.path.realpath(self.settings.projects_dir / task.project)  # the path the agent sees as its cwd
        now = self.clock()
        reason = (f"Claude Code does not trust the folder {folder}: accept it once by running `claude` in that "
                  f"directory (as the agents' user), or add \"projects\": {{\"{folder}\": "
                  f"{{\"hasTrustDialogAccepted\": true}}}} to ~/.claude.json (or $CLAUDE_CONFIG_DIR/.claude.json)")
        claim.release()  # back to pending, no attempt counted: nothing is wrong with the task
        pause.hold(self.r, task.project, reason, now + d.PROJECT_HOLD_S)
        logger.warning("%s: project %s held until %s: %s", key, task.project, time.ctime(now + d.PROJECT_HOLD_S),
                       reason)
        events.emit(self.r, "held", task=key, session=info.ref, detail=reason)
        pool.reset_pane(self.tmux, info.name, self.settings)
        pool_state.set_idle(self.r, self.tmux, info, now=now, detail=f"project {task.project} held: folder not trusted")
        return Outcome(Status.HELD, session=info.name, task=key, detail=reason)

    def _launch_failed(self, task: Task, claim: cl.Claim, info: SessionInfo, exc: Exception) -> Outcome:
        key = str(task.key)
        if type(exc) is SessionError:
            # The tmux session vanished (killed, tmux restarted): neither the task's fault nor the agent's.
            claim.release()
            events.emit(self.r, "launch-failed", task=key, session=info.ref, detail=str(exc))
            pool_state.set_idle(self.r, self.tmux, info, now=self.clock(), detail=str(exc)[:500])
            return Outcome(Status.LAUNCH_FAILED, session=info.name, task=key, detail=str(exc))
        count = attempts.count(self.r, task.project, task.id)
        reason = f"launch failed in {info.name} (attempt {count}/{self.settings.max_launch_attempts}): {exc}"
        logger.warning("%s: %s", key, reason)
        if count >= self.settings.max_launch_attempts:
            claim.fail(reason)
            attempts.forget(self.r, task.project, task.id)
            events.emit(self.r, "failed", task=key, session=info.ref, detail=reason)
        else:
            claim.release()
            events.emit(self.r, "launch-failed", task=key, session=info.ref, detail=reason)
        pool.reset_pane(self.tmux, info.name, self.settings)
        pool_state.set_idle(self.r, self.tmux, info, failed=True, now=self.clock(), detail=str(exc)[:500])
        return Outcome(Status.LAUNCH_FAILED, session=info.name, task=key, detail=reason)
