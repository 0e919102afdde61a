"""Session lifecycle (issue 6): finished, failed, limited, waiting, dead and lost sessions.

One pass per session, idempotent: ``gather`` what the session shows (done/, pane, hook
reports), let the pure ``core.lifecycle.decide`` choose, ``apply`` its action here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dispatcher.agent import pool, pool_state
from dispatcher.agent.launcher import resume_path
from dispatcher.core import defaults as d
from dispatcher.core import keys, lifecycle, limits
from dispatcher.core.errors import TmuxError
from dispatcher.core.gate import DoneIndex
from dispatcher.core.lifecycle import Action, Evidence, Step
from dispatcher.core.session_ref import SessionRef
from dispatcher.core.taskfile import DepRef
from dispatcher.flows import claim as cl
from dispatcher.flows import ready, warm
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.recovery import fence_session
from dispatcher.inbox import files as aq
from dispatcher.inbox import worktree
from dispatcher.store import attempts, events, hosts, owners, pause
from dispatcher.store import sessions as ss
from dispatcher.store.hook_log import HookLog
from dispatcher.store.sessions import SessionInfo, State

logger = logging.getLogger(__name__)


def task_done(disp: Dispatcher, info: SessionInfo) -> bool:
    proj = aq.project(disp.settings.projects_dir, info.project)
    return DoneIndex({info.project: aq.done_names(proj)}).is_done(DepRef(info.project, info.task))


def gather(disp: Dispatcher, info: SessionInfo) -> Evidence:
    """Look at a working session: its tmux tag, done/, the pane and the hook reports (no decision)."""
    done = task_done(disp, info)
    try:  # the pane's tag and screen in one tmux call (this runs for every working session on every pass)
        snap, options = disp.tmux.snapshot_with_options(info.name)
        pane_agent: str | None = pool_state.copy_in(options).get("agent_uuid")
        text, dead = snap.text, snap.info.dead
    except TmuxError:
        pane_agent, text, dead = None, "", True
    reports = HookLog(disp.r).read(info.ref, after_id=info.hooks_after or "0-0", count=10_000)
    return Evidence(done=done, dead=dead, screen=text, reports=tuple(reports), pane_agent=pane_agent)


def monitor_all(disp: Dispatcher) -> list[str]:
    """One pass over the pool; returns a line per change."""
    freed: list[SessionRef] = []
    changes = _watch(disp, None, freed)
    for ref in freed:  # through the queue: this pass must not wait for launches
        disp.request_assign(ref)
    try:
        changes += warm.warm_free(disp)  # free sessions get their warm agents (agent.prewarm)
    except Exception:  # warming is an optimisation: it must never stop the watching
        logger.exception("warming free sessions failed")
    return changes


def monitor_tasks(disp: Dispatcher, task_keys: set[str]) -> list[str]:
    """A pass over only the sessions of this host holding one of ``task_keys`` (``PROJECT:ID``, reached done/).

    The sessions it frees are given their next tasks from here: the first in this process (a pass for a few
    sessions may wait for one launch; one Celery message less per task), the others through the queue so that
    the host's other workers launch them meanwhile.
    """
    freed: list[SessionRef] = []
    changes = _watch(disp, task_keys, freed)
    for i, ref in enumerate(freed):
        try:
            outcome = disp.serve(ref) if i == 0 else disp.queue_assign(ref)
        except Exception:  # the session is free: the next pass or event gives it work
            logger.exception("giving %s its next task failed", ref)
            continue
        if outcome is not None and outcome.task:
            changes.append(f"{ref.name}: {outcome.status.value} {outcome.task}")
    return changes


def _watch(disp: Dispatcher, task_keys: set[str] | None, freed: list[SessionRef]) -> list[str]:
    """``monitor_one`` for each session (holding one of ``task_keys``, when given); a line per change.

    ``freed``: the sessions it frees for work are appended there (the caller gives them work)."""
    changes: list[str] = []
    # One tmux call and one Redis round trip for all states (this runs every few seconds).
    for name, info in disp.pool_infos().items():
        if task_keys is not None and info.task_key not in task_keys:
            continue
        try:
            change = monitor_one(disp, info, freed)
        except Exception:  # one broken session must not stop the others being watched
            logger.exception("monitoring %s failed", name)
            continue
        if change:
            changes.append(f"{name}: {change}")
    return changes


def owners_of(disp: Dispatcher, task_keys: list[str]) -> dict[str, str | None]:
    """The host whose session owns each task (None: no owner record)."""
    pairs = [(k.partition(":")[0], k.partition(":")[2]) for k in task_keys]
    found = owners.get_many(disp.r, pairs)
    return {f"{p}:{t}": owners.host_of(found[(p, t)]) for p, t in pairs}


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


def monitor_one(disp: Dispatcher, info: SessionInfo, freed: list[SessionRef]) -> str:
    """Move one session's lifecycle on from what it shows now; returns the change, or ''.
    ``freed``: where a session it frees for work goes (the caller gives it work)."""
    now = disp.clock()
    if info.task and info.state in _OWNING:
        other = owners.confirm(disp.r, info.project, info.task, info.ref)
        if other is not None:
            return fence_session(disp.ports, info, other)
    # The state alone decides for sessions not being watched: no tmux or Redis look needed.
    action = lifecycle.by_state(info)
    if action is None:
        action = lifecycle.decide(gather(disp, info), info, now, disp.settings.finish_grace)
    return apply(disp, info, action, now, freed)


def apply(disp: Dispatcher, info: SessionInfo, action: Action, now: float, freed: list[SessionRef]) -> str:
    """Carry out what ``lifecycle.decide`` chose; returns the change, or '' (``freed``: see monitor_one)."""
    step = action.step
    if step is Step.RECREATE:
        return _recreate(disp, info)
    if step is Step.MAYBE_RESUME:
        return _maybe_resume(disp, info, now)
    if step is Step.AGENT_LOST:
        return _agent_lost(disp, info, action.detail)
    if step is Step.FINISH:
        return _finish(disp, info, freed)
    if step is Step.LIMITED and action.limit is not None:
        return _limited(disp, info, action.limit, now)
    if step is Step.AGENT_DIED:
        return _agent_died(disp, info, action.tail)
    if step is Step.WAITING:
        pool_state.transition(disp.r, disp.tmux, info, State.WAITING, since=info.since,
                              detail=action.detail[:500])
        events.emit(disp.r, "waiting", task=info.task_key, session=info.ref, detail=action.detail[:500])
        return f"waiting: {action.detail[:80]}"
    if step is Step.WORKING_AGAIN:
        pool_state.transition(disp.r, disp.tmux, info, State.WORKING, since=info.since, detail="")
        return "working again"
    if step is Step.IDLE_SEEN:
        pool_state.start_idle_grace(disp.r, info, now)
        return ""
    if step is Step.FAIL:
        return _fail(disp, info, action.detail, action.tail)
    if step is Step.IDLE_CLEARED:
        pool_state.clear_idle_grace(disp.r, info)
    return ""


#: States in which a session owns its task (a MISSING one may still own it: its agent is resumed).
_OWNING = (State.WORKING, State.WAITING, State.LIMITED, State.MISSING)


def _free(disp: Dispatcher, info: SessionInfo, *, failed: bool, detail: str,
          freed: list[SessionRef] | None = None) -> None:
    """Idle again; ``freed`` (not for a failure, which cools down) gets the session for its next task."""
    now = disp.clock()
    reset = disp.settings.agent.recycle == "exit" or failed
    if reset:  # the pane first (Redis must not call it free while the old agent runs), the tmux copy with it
        pool.reset_pane(disp.tmux, info.name, disp.settings, options=pool_state.idle_copy(info, now))
    pool_state.set_idle(disp.r, disp.tmux, info, failed=failed, now=now, detail=detail, copied=reset)
    if freed is not None and not failed:  # a failed one cools down: a later pass or event gives it work
        freed.append(disp.ref(info.name))


def _finish(disp: Dispatcher, info: SessionInfo, freed: list[SessionRef]) -> str:
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
    cl.finished(disp.r, info.project, info.task, info.ref)
    events.emit(disp.r, "finished", task=info.task_key, session=info.ref,
                detail=f"after {int(disp.clock() - info.since)}s{note}")
    ready.on_done(disp, info.project, info.task)  # a blocked task waiting on it: the index needs a scan
    # The API answered a whole task: the next rate limit starts the backoff over.
    pause.reset_backoff(disp.r, disp.settings.host.account)
    _free(disp, info, failed=False, detail=f"finished {info.task_key}", freed=freed)
    return f"finished {info.task_key}"


def _unfinish(disp: Dispatcher, info: SessionInfo, reason: str) -> str:
    """The agent finished but the worktree's merge command failed: done/<id>.md → inbox/<id>.md.dispatched, failed."""
    cl.undo_done(disp.r, aq.project(disp.settings.projects_dir, info.project), info.task, info.ref)
    return _fail(disp, info, reason, "")


def _fail(disp: Dispatcher, info: SessionInfo, reason: str, tail: str) -> str:
    proj = aq.project(disp.settings.projects_dir, info.project)
    tree = worktree.path_for(proj.root, info.task)
    if tree.is_dir() and str(tree) not in reason:
        reason = f"{reason} (worktree kept at {tree})"  # for inspection: failed work is never deleted
    note = f"{reason}\nsession: {info.ref}\nagent: {info.agent_uuid}\n\nlast screen lines:\n{tail}"
    cl.fail_dispatched(disp.r, proj, info.task, info.ref, note)
    events.emit(disp.r, "failed", task=info.task_key, session=info.ref, detail=reason)
    from dispatcher.flows.blocked import check_blocked

    check_blocked(disp.settings, disp.r, now=disp.clock())  # dependents become stuck now, not at the next tick
    _free(disp, info, failed=True, detail=reason)
    return f"failed {info.task_key}: {reason}"


def _agent_died(disp: Dispatcher, info: SessionInfo, tail: str) -> str:
    """The agent process ended without finishing: task back to pending (bounded), session cools down."""
    proj = aq.project(disp.settings.projects_dir, info.project)
    tries = attempts.count(disp.r, info.project, info.task)
    if tries >= disp.settings.max_launch_attempts:
        return _fail(disp, info, f"agent exited {tries} times without finishing", tail)
    cl.requeue_dispatched(disp.r, proj, info.task, info.ref)
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

    return resume_session(disp.ports, info)


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
