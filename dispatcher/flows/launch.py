"""The path of a task from a session's claim to the agent driver.

``LaunchSpec`` is what dispatch and resume decide (which session, which task, where,
which conversation); :func:`request_for` turns it into the driver's ``LaunchRequest``
(agent/ knows nothing of flows/), and :func:`launch_in_session` runs the driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import redis

from dispatcher.agent import launcher, warm
from dispatcher.agent.tmux import Tmux
from dispatcher.agent.warm import WarmTag
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.taskfile import Task
from dispatcher.store import redis_conn

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
    #: The session's pre-warmed agent, when its start fits this launch (``fitting_warm``): only a paste is left.
    warm: WarmTag | None = None

    @property
    def ref(self) -> str:
        """``HOST/NAME`` of the session (hook reports and events name it so)."""
        return f"{self.host}/{self.session}" if self.host else self.session


class LaunchFn(Protocol):
    """Start ``spec``'s task in its session; raises a LaunchError subclass (or OSError) on failure.

    Returns the Claude session id of the agent that got the task when it is not ``spec.agent_uuid``'s
    (a warm agent found unusable at the last moment was replaced), else None or that id.
    """

    def __call__(self, spec: LaunchSpec) -> str | None: ...


def request_for(spec: LaunchSpec) -> launcher.LaunchRequest:
    """The driver's view of a launch: the task's words and where the agent works (the model follows priority)."""
    return launcher.LaunchRequest(
        project_dir=spec.project_dir, project=spec.task.project, task_id=spec.task.id,
        priority=spec.task.priority.value, body=spec.task.body, session_uuid=spec.agent_uuid,
        queue_dir=str(spec.queue_dir) if spec.queue_dir is not None else d.QUEUE_DIR,
    )


def launch_in_session(settings: Settings, r: redis.Redis, tmux: Tmux, spec: LaunchSpec) -> str | None:
    """The real launch: start the agent in ``spec.session`` and deliver the task (agent/launcher.py)."""
    return launcher.launch(tmux, spec.session, request_for(spec), settings.agent, r, state_dir=settings.state_dir,
                    redis_url=_hook_url(settings), ref=spec.ref, warm=spec.warm).agent_uuid or None


def _hook_url(settings: Settings) -> str:
    return redis_conn.redis_py_url(redis_conn.configured_url(settings))


def fitting_warm(settings: Settings, r: redis.Redis, tmux: Tmux, spec: LaunchSpec) -> LaunchSpec:
    """``spec`` taking over the session's warm agent when that agent's start equals this launch's, else ``spec``.

    The agent was started with its own Claude session id, so the spec takes that id: the fingerprint
    of the launch is computed with it, and the session's record names the agent that really runs.
    Whether the agent is still there, pristine and at its prompt is the launcher's check, just before
    the paste; if not, it starts a cold agent with an id of its own and says which (the launch's result).
    """
    tag = warm.read_tag(tmux, spec.session)
    if tag is None or spec.queue_dir is not None:  # a worktree's launch never fits an agent started before it
        return spec
    if not tag_fits(settings, r, spec.session, spec.ref, tag, spec.task.project, spec.task.priority.value,
                    spec.project_dir):
        return spec
    return replace(spec, agent_uuid=tag.uuid if settings.agent.hooks else spec.agent_uuid, warm=tag)


def tag_fits(settings: Settings, r: redis.Redis, session: str, ref: str, tag: WarmTag, project: str, priority: str,
             project_dir: Path | None = None) -> bool:
    """A launch for ``project`` at ``priority`` would start exactly the agent ``tag`` describes (task aside)."""
    if settings.agent.hooks and tag.uuid == "-":
        return False
    # The task's ID and words are not part of the start (the fingerprint leaves AQ_TASK out).
    request = launcher.LaunchRequest(project_dir=project_dir or settings.projects_dir / project, project=project,
                                     task_id="", body="", priority=priority, session_uuid=tag.uuid)
    key = launcher.launch_key(session, request, settings.agent, r, state_dir=settings.state_dir,
                              redis_url=_hook_url(settings), ref=ref)
    return key == tag.key


def start_warm(settings: Settings, r: redis.Redis, tmux: Tmux, session: str, ref: str, project: str,
               priority: str) -> WarmTag:
    """Boot a warm agent for ``project`` at ``priority``'s model in ``session`` (agent/launcher.start_warm)."""
    request = launcher.LaunchRequest(project_dir=settings.projects_dir / project, project=project, task_id="",
                                     body="", priority=priority)
    return launcher.start_warm(tmux, session, request, settings.agent, r, state_dir=settings.state_dir,
                               redis_url=_hook_url(settings), ref=ref)
