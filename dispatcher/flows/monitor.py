"""Session lifecycle (issue 6): finished, failed, limited, waiting, dead and lost sessions.

Hook reports (Stop, StopFailure, Notification, UserPromptSubmit) are read
first; the screen is the fallback. Each decision is a small function of what
was observed, so the whole loop is one pass per session and idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from dispatcher.inbox import files as aq
from dispatcher.core import defaults as d
from dispatcher.store import events, hosts, owners, pause
from dispatcher.core import keys, limits, screen
from dispatcher.agent import pool_state
from dispatcher.inbox import worktree
from dispatcher.store import sessions as ss
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows import ready
from dispatcher.core.errors import ClaimError, TmuxError
from dispatcher.core.gate import DoneIndex
from dispatcher.agent.hooks import HookLog, HookReport
from dispatcher.agent.launcher import resume_path
from dispatcher.flows.recovery import fence_session
from dispatcher.store.sessions import SessionInfo, State
from dispatcher.core.taskfile import DepRef

logger = logging.getLogger(__name__)

#: Notification types that mean "the agent waits for a person".
WAITING_TYPES = ("permission_prompt", "elicitation_dialog")


@dataclass(frozen=True)
class Observation:
    """What one look at a working session showed."""

    done: bool
    dead: bool
    idle: bool
    limit: limits.Limit | None
    waiting_text: str | None
    screen_tail: str


def _latest(reports: list[HookReport], event: str) -> HookReport | None:
    found = [r for r in reports if r.event == event]
    return found[-1] if found else None


def _stream_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _current_turn(text: str) -> str:
    """Screen lines after the last submitted message: a resumed agent redraws old turns (and old limits)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("❯ ")]
    return "\n".join(lines[starts[-1]:]) if starts else text


def task_done(disp: Dispatcher, info: SessionInfo) -> bool:
    proj = aq.project(disp.settings.projects_dir, info.project)
    return DoneIndex({info.project: aq.done_names(proj)}).is_done(DepRef(info.project, info.task))


def observe(disp: Dispatcher, info: SessionInfo) -> Observation:
    """Look at a working session: done/ first, then hooks, then the screen."""
    done = task_done(disp, info)
    try:
        snap = disp.tmux.snapshot(info.name)
        text, dead = snap.text, snap.info.dead
    except TmuxError:
        text, dead = "", True
    tail = "\n".join(line for line in text.splitlines() if line.strip())[-2000:]
    reports = HookLog(disp.r).read(info.ref, after_id=info.hooks_after or "0-0", count=10_000)
    failure = _latest(reports, "StopFailure")
    submit = _latest(reports, "UserPromptSubmit")
    if failure is not None and submit is not None and _stream_order(failure.id) < _stream_order(submit.id):
        failure = None  # about an earlier turn (e.g. reported late by the agent we just resumed)
    # Hook and screen are read by the same classifier; the screen wins when it names a reset time.
    by_hook = limits.from_hook(failure.payload) if failure is not None else None
    on_screen = screen.detect_limit(_current_turn(text))
    limit = on_screen if on_screen is not None and (by_hook is None or on_screen.resets) else by_hook
    waiting_text = None
    note = _latest(reports, "Notification")
    later = [r for r in reports if r.event in ("UserPromptSubmit", "Stop") and note is not None
             and _stream_order(r.id) > _stream_order(note.id)]
    if note is not None and not later and note.payload.get("notification_type") in WAITING_TYPES:
        waiting_text = str(note.payload.get("message") or "agent waits for input")
    busy = screen.is_busy(text)
    stop = _latest(reports, "Stop")
    hook_idle = stop is not None and (submit is None or _stream_order(stop.id) > _stream_order(submit.id))
    idle = not dead and not busy and (hook_idle or screen.turn_finished(text))
    return Observation(done, dead, idle, limit, waiting_text, tail)


def monitor_all(disp: Dispatcher) -> list[str]:
    """One pass over the pool; returns a line per change."""
    changes: list[str] = []
    # One tmux call and one Redis round trip for all states (this runs every few seconds).
    for name, info in disp.pool_infos().items():
        try:
            change = monitor_one(disp, info)
        except Exception:  # one broken session must not stop the others being watched
            logger.exception("monitoring %s failed", name)
            continue
        if change:
            changes.append(f"{name}: {change}")
    return changes


def fan_out_hosts(disp: Dispatcher, send: Callable[[str], object]) -> list[str]:
    """Queue one monitor pass per live host (this one included), at most one queued per host."""
    now = disp.clock()
    names = set(hosts.alive(disp.r, now, disp.settings.host_lost_after)) | {disp.host}
    sent = []
    for host in sorted(names):
        # The pass clears it when it starts: a host that is down gets one queued pass, not a backlog.
        if disp.r.set(keys.monitor_pending(host), "1", nx=True, px=int(disp.settings.host_lost_after * 1000)):
            send(host)
            sent.append(host)
    return sent


def monitor_one(disp: Dispatcher, info: SessionInfo) -> str:
    """Move one session's lifecycle on from what it shows now; returns the change, or ''."""
    name = info.name
    now = disp.clock()
    if info.task and info.state in _OWNING:
        other = owners.confirm(disp.r, info.project, info.task, info.ref)
        if other is not None:
            return fence_session(disp, info, other)
    if info.state is State.MISSING:
        return _recreate(disp, info)
    if info.state is State.LIMITED:
        return _maybe_resume(disp, info, now)
    if info.state not in (State.WORKING, State.WAITING):
        return ""
    if pool_state.read_tags(disp.tmux, name).get("agent_uuid") != info.agent_uuid:
        # Same name, different session: tmux was restarted under us and the pool recreated.
        return _agent_lost(disp, info, "agent's tmux session was replaced")
    obs = observe(disp, info)
    if obs.done:
        return _finish(disp, info)
    if obs.limit is not None:
        return _limited(disp, info, obs.limit, now)
    if obs.dead:
        return _agent_died(disp, info, obs)
    if obs.waiting_text and info.state is not State.WAITING:
        pool_state.transition(disp.r, disp.tmux, info, State.WAITING, since=info.since,
                              detail=obs.waiting_text[:500])
        events.emit(disp.r, "waiting", task=info.task_key, session=info.ref, detail=obs.waiting_text[:500])
        return f"waiting: {obs.waiting_text[:80]}"
    if not obs.waiting_text and info.state is State.WAITING:
        pool_state.transition(disp.r, disp.tmux, info, State.WORKING, since=info.since, detail="")
        return "working again"
    if obs.idle:
        if not info.idle_since:
            ss.put(disp.r, replace(info, idle_since=now))
            return ""
        if now - info.idle_since >= disp.settings.finish_grace:
            return _fail(disp, info, "agent finished its turn but the task is not in done/", obs.screen_tail)
    elif info.idle_since:
        ss.put(disp.r, replace(info, idle_since=0.0))
    return ""


#: States in which a session owns its task (a MISSING one may still own it: its agent is resumed).
_OWNING = (State.WORKING, State.WAITING, State.LIMITED, State.MISSING)


def _free(disp: Dispatcher, info: SessionInfo, *, failed: bool, detail: str) -> None:
    if disp.settings.agent.recycle == "exit" or failed:
        pool_state.reset_pane(disp.tmux, info.name, disp.settings)
    pool_state.set_idle(disp.r, disp.tmux, info, failed=failed, now=disp.clock(), detail=detail)
    if not failed:
        disp.request_assign(disp.ref(info.name))


def _finish(disp: Dispatcher, info: SessionInfo) -> str:
    proj = aq.project(disp.settings.projects_dir, info.project)
    leftover = proj.task_path(info.task, d.DISPATCHED)
    if leftover.exists():  # the agent copied instead of moving: done/ is the truth
        leftover.unlink()
    note = ""
    if worktree.path_for(proj.root, info.task).is_dir():
        tidy = worktree.finish(proj.root, info.task, disp.settings.project_settings(info.project).worktree)
        if not tidy.ok:  # the merge failed: done/ must not claim what is not on the base branch
            return _unfinish(disp, info, tidy.detail)
        note = f"; {tidy.detail}"
    owners.drop(disp.r, info.project, info.task, info.ref)
    events.emit(disp.r, "finished", task=info.task_key, session=info.ref,
                detail=f"after {int(disp.clock() - info.since)}s{note}")
    ready.on_done(disp, info.project, info.task)  # a blocked task waiting on it: the index needs a scan
    pause.reset_backoff(disp.r, disp.settings.host.account)  # the API answered a whole task: the next rate limit starts the backoff over
    _free(disp, info, failed=False, detail=f"finished {info.task_key}")
    return f"finished {info.task_key}"


def _unfinish(disp: Dispatcher, info: SessionInfo, reason: str) -> str:
    """The agent finished but the worktree's merge command failed: done/<id>.md → inbox/<id>.md.dispatched, failed."""
    proj = aq.project(disp.settings.projects_dir, info.project)
    try:
        aq.move_no_replace(aq.done_path(proj, info.task), proj.task_path(info.task, d.DISPATCHED))
    except ClaimError as exc:
        logger.warning("cannot take %s back from done/: %s", info.task_key, exc)
    return _fail(disp, info, reason, "")


def _fail(disp: Dispatcher, info: SessionInfo, reason: str, tail: str) -> str:
    proj = aq.project(disp.settings.projects_dir, info.project)
    tree = worktree.path_for(proj.root, info.task)
    if tree.is_dir() and str(tree) not in reason:
        reason = f"{reason} (worktree kept at {tree})"  # for inspection: failed work is never deleted
    note = f"{reason}\nsession: {info.ref}\nagent: {info.agent_uuid}\n\nlast screen lines:\n{tail}"
    try:
        aq.fail(proj.task_path(info.task, d.DISPATCHED), note)
    except ClaimError as exc:
        logger.warning("cannot mark %s failed: %s", info.task_key, exc)
    owners.drop(disp.r, info.project, info.task, info.ref)
    events.emit(disp.r, "failed", task=info.task_key, session=info.ref, detail=reason)
    from dispatcher.flows.blocked import check_blocked

    check_blocked(disp.settings, disp.r, now=disp.clock())  # dependents become stuck now, not at the next tick
    _free(disp, info, failed=True, detail=reason)
    return f"failed {info.task_key}: {reason}"


def _agent_died(disp: Dispatcher, info: SessionInfo, obs: Observation) -> str:
    """The agent process ended without finishing: task back to pending (bounded), session cools down."""
    proj = aq.project(disp.settings.projects_dir, info.project)
    attempts = disp.count_attempt(info.project, info.task)
    if attempts >= disp.settings.max_launch_attempts:
        return _fail(disp, info, f"agent exited {attempts} times without finishing", obs.screen_tail)
    try:
        aq.move_no_replace(proj.task_path(info.task, d.DISPATCHED), proj.task_path(info.task))
    except ClaimError as exc:
        logger.warning("cannot requeue %s: %s", info.task_key, exc)
    owners.drop(disp.r, info.project, info.task, info.ref)
    events.emit(disp.r, "released", task=info.task_key, session=info.ref, detail="agent exited; task requeued")
    _free(disp, info, failed=True, detail="agent exited")
    return f"agent died; {info.task_key} requeued"


def _limited(disp: Dispatcher, info: SessionInfo, limit: limits.Limit, now: float) -> str:
    """Account-wide limit: pause the pool (as long as the limit says), keep the task owned, remember the agent."""
    held = pause.for_limit(disp.r, limit, now, disp.settings.limits, disp.settings.host.account)
    _remember_resume(disp, info)
    said = held.describe() if held.reason == limit.describe() else f"{limit.describe()}; {held.describe()}"
    pool_state.transition(disp.r, disp.tmux, info, State.LIMITED, since=info.since, detail=said[:500])
    events.emit(disp.r, "limited", task=info.task_key, session=info.ref, detail=said[:500])
    return f"limited: {said}"


def _maybe_resume(disp: Dispatcher, info: SessionInfo, now: float) -> str:
    if disp.paused_until(now):
        return ""
    from dispatcher.flows.resume import resume_session

    return resume_session(disp, info)


def _remember_resume(disp: Dispatcher, info: SessionInfo) -> None:
    """Write ``<resume_dir>/<session>-resume-id.txt`` (reference layout): the next launch there resumes."""
    if not info.agent_uuid:
        return
    path = resume_path(disp.settings.agent, info.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(info.agent_uuid + "\n", encoding="utf-8")


def _agent_lost(disp: Dispatcher, info: SessionInfo, why: str) -> str:
    """The agent's tmux session is gone or new (tmux crash, reboot): resume its conversation, task kept."""
    if not (info.task and aq.project(disp.settings.projects_dir, info.project).task_path(
            info.task, d.DISPATCHED).exists()):
        pool_state.set_idle(disp.r, disp.tmux, info, now=disp.clock(), detail=why)
        return why
    _remember_resume(disp, info)
    pool_state.transition(disp.r, disp.tmux, info, State.LIMITED, since=info.since, detail=f"{why}; resuming")
    events.emit(disp.r, "recovered", task=info.task_key, session=info.ref, detail=f"{why}; will resume")
    return f"{why}; {info.task_key} will be resumed"


def _recreate(disp: Dispatcher, info: SessionInfo) -> str:
    """A pool session vanished: recreate just that one; an owned task is resumed."""
    pool_cfg = disp.settings.pool
    disp.tmux.new_session(info.name, width=pool_cfg.width, height=pool_cfg.height,
                          cwd=disp.settings.projects_dir, remain_on_exit=True)
    events.emit(disp.r, "session-created", session=info.ref)
    return _agent_lost(disp, ss.get(disp.r, disp.ref(info.name)) or info, "session recreated")
