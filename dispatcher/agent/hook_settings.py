"""The per-launch Claude Code ``--settings`` file: every hook event of interest runs ``python -m dispatcher.hook``.

That entry point (dispatcher/hook.py) XADDs each payload to ``keys.session_hooks(session)``;
store/hook_log.py reads the stream back (the launcher to confirm delivery, the monitor for
Stop and limits).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from dispatcher.core.defaults import HOOK_TIMEOUT_S

EVENTS: tuple[str, ...] = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "Notification", "SessionEnd")


def settings_path(state_dir: Path, session: str) -> Path:
    """Where the settings file for ``session``'s agent lives."""
    return Path(state_dir) / "agents" / session / "settings.json"


def hook_command(event: str, python: str = sys.executable) -> str:
    """The shell command Claude Code runs for ``event`` (it runs hook commands through a shell)."""
    return " ".join(shlex.quote(p) for p in (python, "-m", "dispatcher.hook", event))


def settings_document(python: str = sys.executable) -> dict[str, Any]:
    """The ``--settings`` JSON: every event of interest reports through ``dispatcher.hook``."""
    return {
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": hook_command(event, python), "timeout": HOOK_TIMEOUT_S}]}]
            for event in EVENTS
        }
    }


def write_settings(state_dir: Path, session: str, *, python: str = sys.executable) -> Path:
    """Write (atomically) the per-launch settings file; the user's own settings are never touched."""
    path = settings_path(state_dir, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings_document(python), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
