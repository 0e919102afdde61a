"""The tag of a pre-warmed agent: an agent booted in a free pool session before any task is known.

A warm agent belongs to no task: its session stays ``idle`` (free, not working) and the only
thing that marks the pane as holding a usable agent is this tag, one tmux user option
(``@aq_warm``) on the session. The tag lives exactly as long as the agent it describes: it is
written once the agent shows its ready prompt, and cleared by every pane reset and by every
launch (from then on the agent belongs to a task). A dispatch uses the agent only when the
tag's fingerprint equals the one the task's own launch would have (same argv: command,
model, settings file, session id, no resume; same environment but the task's name; same
cwd); anything else is a normal cold launch, which replaces the agent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agent.tmux import Tmux
from dispatcher.core.errors import TmuxError

logger = logging.getLogger(__name__)

OPTION = "@aq_warm"
#: Environment variables that name the task: a warm agent cannot have them, so they are not part of the fit.
TASK_ENV = ("AQ_TASK",)


@dataclass(frozen=True)
class WarmTag:
    """What a warm agent was started as: its fingerprint, Claude session id, project, model, hook stream mark."""

    key: str
    uuid: str
    project: str
    model: str
    #: The session's hook stream id before the agent started: a UserPromptSubmit after it means it was used.
    hooks_after: str

    def encode(self) -> str:
        return " ".join((self.key, self.uuid, self.project, self.model, self.hooks_after))

    @classmethod
    def decode(cls, value: str) -> WarmTag | None:
        parts = value.split()
        if len(parts) != 5:
            return None
        return cls(*parts)


def fingerprint(argv: Sequence[str], env: Mapping[str, str], cwd: str | Path, settings_file: Path | None) -> str:
    """A digest of everything an agent was started with that a task may need different (not the task's name)."""
    settings = ""
    if settings_file is not None:
        try:
            settings = Path(settings_file).read_text(encoding="utf-8")
        except OSError:
            settings = "?"
    doc = json.dumps([list(argv), sorted((k, v) for k, v in env.items() if k not in TASK_ENV),
                      os.path.realpath(cwd), settings], ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:32]


def read_tag(tmux: Tmux, session: str) -> WarmTag | None:
    """The warm tag of ``session``'s pane, or None (no warm agent, no session, unreadable)."""
    try:
        value = tmux.user_options(session).get(OPTION, "")
    except TmuxError:
        return None
    return WarmTag.decode(value) if value else None


def write_tag(tmux: Tmux, session: str, tag: WarmTag) -> None:
    tmux.set_user_options(session, {OPTION: tag.encode()})


def clear_tag(tmux: Tmux, session: str) -> None:
    """The pane no longer holds a free warm agent (reset, or given a task); a failure is logged."""
    try:
        tmux.set_user_options(session, {OPTION: ""})
    except TmuxError as exc:
        logger.warning("cannot clear the warm tag of %s: %s", session, exc)
