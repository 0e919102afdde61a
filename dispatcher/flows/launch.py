"""The path of a task from a session's claim to the agent driver.

``LaunchSpec`` is what dispatch and resume decide (which session, which task, where,
which conversation); :func:`request_for` turns it into the driver's ``LaunchRequest``
(agent/ knows nothing of flows/), and :func:`launch_in_session` runs the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from dispatcher.agent import launcher
from dispatcher.agent.tmux import Tmux
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.taskfile import Task
from dispatcher.store import redis_conn


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
    """Start ``spec``'s task in its session; raises a LaunchError subclass (or OSError) on failure."""

    def __call__(self, spec: LaunchSpec) -> None: ...


def request_for(spec: LaunchSpec) -> launcher.LaunchRequest:
    """The driver's view of a launch: the task's words and where the agent works (the model follows priority)."""
    return launcher.LaunchRequest(
        project_dir=spec.project_dir, project=spec.task.project, task_id=spec.task.id,
        priority=spec.task.priority.value, body=spec.task.body, session_uuid=spec.agent_uuid,
        queue_dir=str(spec.queue_dir) if spec.queue_dir is not None else d.QUEUE_DIR,
    )


def launch_in_session(settings: Settings, r: redis.Redis, tmux: Tmux, spec: LaunchSpec) -> None:
    """The real launch: start the agent in ``spec.session`` and deliver the task (agent/launcher.py)."""
    launcher.launch(tmux, spec.session, request_for(spec), settings.agent, r, state_dir=settings.state_dir,
                    redis_url=redis_conn.redis_py_url(redis_conn.configured_url(settings)), ref=spec.ref)
