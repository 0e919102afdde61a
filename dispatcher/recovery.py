"""Recovery (run by every full scan): abandoned launches and sessions stuck mid-launch.

A ``.launching`` file whose flock nobody holds was left by a dead worker. If the
agent verifiably received the task (hook report or screen) it is promoted to
``.dispatched``; otherwise the agent is stopped and the task goes back to
pending. Either way it runs exactly once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import agent_queue as aq
from . import defaults as d
from . import events, keys, locks, pool_state, screen
from .dispatch import Dispatcher, claim_is_live
from .errors import ClaimError, TmuxError
from .hooks import HookLog
from .message import tag as message_tag
from .sessions import SessionInfo, State

logger = logging.getLogger(__name__)

#: A claim younger than this may not have its flock yet (link → open → flock).
CLAIM_GRACE_S = 10.0


def delivered(disp: Dispatcher, info: SessionInfo) -> bool:
    """Evidence that ``info.task`` was submitted to the agent in ``info.name``."""
    task_tag = message_tag(info.task)
    report = HookLog(disp.r).latest(info.name, "UserPromptSubmit")
    if report is not None and task_tag in report.prompt and report.time >= info.since - 1:
        return True
    try:
        snap = disp.tmux.snapshot(info.name)
    except TmuxError:
        return False
    return not snap.info.dead and screen.shows_submitted(snap.text, task_tag)


def _owner_session(disp: Dispatcher, project: str, task_id: str) -> SessionInfo | None:
    for info in disp.pool_infos().values():
        if info.project == project and info.task == task_id and info.state in (
                State.LAUNCHING, State.WORKING, State.WAITING):
            return info
    return None


def recover_launching(disp: Dispatcher) -> list[str]:
    """Resolve every abandoned ``.launching`` file; returns what was done, for the log."""
    done: list[str] = []
    now = disp.clock()
    for proj in aq.discover_projects(disp.settings.projects_dir, disp.settings.projects):
        snap = aq.snapshot(proj)
        for name in sorted(snap.inbox):
            if not name.endswith(d.TASK_SUFFIX + d.LAUNCHING) or name.startswith("."):
                continue
            path = proj.inbox / name
            task_id = name[: -len(d.TASK_SUFFIX + d.LAUNCHING)]
            pending = proj.inbox / (task_id + d.TASK_SUFFIX)
            _drop_half_claim(pending, path)
            try:
                age = now - os.stat(path, follow_symlinks=False).st_ctime
            except FileNotFoundError:
                continue
            if age < CLAIM_GRACE_S or claim_is_live(path):
                continue
            done.append(_resolve(disp, proj, task_id, path))
    return done


def _drop_half_claim(pending: Path, launching: Path) -> None:
    """A crash between link and unlink leaves both names on one inode: keep the claimed one."""
    try:
        if os.path.samefile(pending, launching):
            os.unlink(pending)
    except FileNotFoundError:
        pass


def _resolve(disp: Dispatcher, proj: aq.Project, task_id: str, path: Path) -> str:
    key = f"{proj.name}:{task_id}"
    info = _owner_session(disp, proj.name, task_id)
    try:
        if info is not None and delivered(disp, info):
            aq.promote(path)
            pool_state.transition(disp.r, disp.tmux, info, State.WORKING, since=info.since)
            events.emit(disp.r, "recovered", task=key, session=info.name, detail="agent had it: dispatched")
            return f"{key}: promoted (agent in {info.name} had received it)"
        if info is not None:
            pool_state.reset_pane(disp.tmux, info.name, disp.settings)
            pool_state.set_idle(disp.r, disp.tmux, info, now=disp.clock(), detail="recovered abandoned launch")
        aq.release(path)
    except ClaimError as exc:
        logger.warning("recovery of %s: %s", key, exc)
        return f"{key}: left as is ({exc})"
    events.emit(disp.r, "recovered", task=key, session=info.name if info else "", detail="back to pending")
    return f"{key}: returned to pending"


def recover_sessions(disp: Dispatcher) -> list[str]:
    """Sessions left in ``launching`` by a dead worker, with no launch in progress any more."""
    done: list[str] = []
    now = disp.clock()
    for name, info in disp.pool_infos().items():
        if info.state is not State.LAUNCHING or now - info.since < CLAIM_GRACE_S:
            continue
        if locks.is_held(disp.r, keys.session_lock(name)):
            continue
        proj = aq.project(disp.settings.projects_dir, info.project) if info.project else None
        if proj is not None and proj.task_path(info.task, d.LAUNCHING).exists():
            continue  # recover_launching decides for the file and the session together
        if proj is not None and proj.task_path(info.task, d.DISPATCHED).exists():
            new = pool_state.transition(disp.r, disp.tmux, info, State.WORKING, since=info.since)
            done.append(f"{name}: working on {info.task_key}")
        else:
            pool_state.reset_pane(disp.tmux, name, disp.settings)
            new = pool_state.set_idle(disp.r, disp.tmux, info, now=now, detail="recovered from an abandoned launch")
            done.append(f"{name}: idle")
        events.emit(disp.r, "recovered", task=info.task_key, session=name, detail=f"session -> {new.state.value}")
    return done
