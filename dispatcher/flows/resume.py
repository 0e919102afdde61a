"""Resume an interrupted agent (usage limit, lost tmux session) with ``--resume <uuid>``.

The task stays ``.dispatched`` and owned by the session throughout; the agent
gets its own conversation back plus a short, tagged "continue" message.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from dispatcher.agent import pool, pool_state
from dispatcher.core import defaults as d
from dispatcher.core.errors import SessionError, TaskFileError
from dispatcher.core.taskfile import Task, parse_task
from dispatcher.flows import claim as cl
from dispatcher.flows.launch import LaunchSpec
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox.reader import read_task_bytes
from dispatcher.store import events
from dispatcher.store.hook_log import HookLog
from dispatcher.store.sessions import SessionInfo, State

logger = logging.getLogger(__name__)

CONTINUE_BODY = ("You were interrupted (usage limit or restart). Continue this task where you stopped; "
                 "the original instructions are earlier in this conversation.")


def resume_session(ports: Ports, info: SessionInfo) -> str:
    """Relaunch the session's agent on its own conversation; on failure the task goes back to pending."""
    held = cl.lock_session(ports.r, info.ref)
    if held is None:
        return ""
    try:
        proj = aq.project(ports.settings.projects_dir, info.project)
        dispatched = proj.task_path(info.task, d.DISPATCHED)
        if not dispatched.exists():
            pool_state.set_idle(ports.r, ports.tmux, info, now=ports.clock(), detail="nothing to resume")
            return "nothing to resume"
        try:
            original = _task_of(dispatched, info)
        except TaskFileError as exc:
            original = Task(id=info.task, project=info.project, path=proj.task_path(info.task))
            logger.warning("resume %s: cannot re-read task (%s); sending the continue message only", info.task_key, exc)
        # Without a conversation to resume, the agent needs the whole task again.
        task = replace(original, body=CONTINUE_BODY) if info.agent_uuid else original
        spec = LaunchSpec(info.name, task, proj.root, info.model, info.agent_uuid, ports.host)
        hooks_after = HookLog(ports.r).last_id(info.ref)
        try:
            ports.launch(spec)
        except (SessionError, OSError) as exc:  # SessionError: also the session vanished under us
            cl.give_back(ports.r, dispatched, info.project, info.task, info.ref)
            events.emit(ports.r, "launch-failed", task=info.task_key, session=info.ref, detail=f"resume failed: {exc}")
            pool.reset_pane(ports.tmux, info.name, ports.settings)
            pool_state.set_idle(ports.r, ports.tmux, info, failed=True, now=ports.clock(),
                                detail=f"resume failed: {exc}"[:500])
            return f"resume failed, {info.task_key} requeued"
        pool_state.transition(ports.r, ports.tmux, info, State.WORKING, since=ports.clock(), detail="resumed",
                              idle_since=0.0, hooks_after=hooks_after)
        events.emit(ports.r, "resumed", task=info.task_key, session=info.ref, detail=f"--resume {info.agent_uuid}")
        return f"resumed {info.task_key}"
    finally:
        held.release()


def _task_of(dispatched: Path, info: SessionInfo) -> Task:
    """The task as it was dispatched (the ``.dispatched`` file's content)."""
    data, mtime = read_task_bytes(dispatched)
    return parse_task(data, task_id=info.task, project=info.project, path=dispatched, mtime=mtime)
