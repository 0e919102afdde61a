"""One exception tree for the whole dispatcher (dramatiq-style).

Every error carries a reason a human can act on: which file, which field,
what was wrong and how to fix it.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Base class of every error raised on purpose by the dispatcher."""


class ConfigError(DispatcherError):
    """The configuration file or environment is invalid."""


class TaskFileError(DispatcherError):
    """A task file cannot be used as it is (parse, validation, safety)."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        where = path or "<task>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")


class TaskIncomplete(TaskFileError):
    """The file looks half-written (frontmatter not closed yet); retry later."""


class TaskGone(TaskFileError):
    """The file vanished between listing and reading (claimed, moved or removed): gone, not invalid."""


class UnsafeIdError(TaskFileError):
    """A project or task ID would escape its directory or is malformed."""


class ClaimError(DispatcherError):
    """A task file could not be claimed (someone else has it, or it vanished)."""


class SessionError(DispatcherError):
    """A tmux session is missing, busy or not part of the pool."""


class TmuxError(SessionError):
    """A tmux command failed."""


class LaunchError(SessionError):
    """The agent could not be started or the task could not be submitted."""


class DialogError(LaunchError):
    """A startup dialog (trust folder, API key, bypass mode) blocks the agent."""

    def __init__(self, dialog: str, detail: str = "") -> None:
        self.dialog = dialog
        msg = f"agent shows the {dialog} dialog; pre-accept it in the agent's config"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class PromptTimeout(LaunchError):
    """The agent's input prompt did not become ready in time."""


class SubmitError(LaunchError):
    """The message was typed but the agent never showed it as submitted."""


class HostConflictError(DispatcherError):
    """Another live deployment already uses this host name."""


class DeploymentError(DispatcherError):
    """Another running deployment owns this state dir or tmux socket."""


class WorktreeError(DispatcherError):
    """A task's git worktree cannot be made (not a repository, branch or path taken…)."""

