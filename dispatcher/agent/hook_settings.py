"""The per-launch Claude Code ``--settings`` file: every hook event of interest runs a hook client.

The client XADDs each payload to ``keys.session_hooks(session)``; store/hook_log.py reads the stream back
(the launcher to confirm delivery, the monitor for Stop and limits). Two clients write the same entry:
dispatcher/hook.sh (bash, ~5 ms a call: chosen wherever bash is found and the Redis URL is redis://) and
dispatcher/hook.py run as ``python -S -I hook.py`` (~20 ms: unix:// and rediss:// URLs, no bash). hook.sh
hands over to the Python one by itself where it cannot report (docs/decisions.md, "Hook client").
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from dispatcher.core.defaults import HOOK_TIMEOUT_S

EVENTS: tuple[str, ...] = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "Notification", "SessionEnd")


def settings_path(state_dir: Path, session: str) -> Path:
    """Where the settings file for ``session``'s agent lives."""
    return Path(state_dir) / "agents" / session / "settings.json"


#: The bash hook client, shipped in the package (package data) beside dispatcher/hook.py.
HOOK_SCRIPT = Path(__file__).resolve().parent.parent / "hook.sh"
#: The Python hook client, run as a script (standard library only) rather than with ``-m``.
HOOK_PY = HOOK_SCRIPT.with_name("hook.py")


def bash_for_hooks(redis_url: str | None) -> str | None:
    """The bash that runs :data:`HOOK_SCRIPT` for agents reporting to ``redis_url``; None: use the Python hook.

    bash speaks plain TCP only (``/dev/tcp``): unix:// and rediss:// URLs go to Python straight away
    rather than through a bash that would hand over anyway. ``None`` (URL unknown) lets hook.sh decide.
    """
    if redis_url is not None and not redis_url.startswith("redis://"):
        return None
    if not HOOK_SCRIPT.is_file():
        return None
    return shutil.which("bash")


def hook_command(event: str, python: str = sys.executable, bash: str | None = None) -> str:
    """The shell command Claude Code runs for ``event`` (it runs hook commands through a shell).

    With ``bash``: hook.sh, which is given ``python`` to hand over to. ``-p`` keeps BASH_ENV and exported
    functions of the agent's environment out of the script.
    With Python: ``-S -I`` and the script's path, as hook.sh hands over; no ``site`` (an editable install's
    import finder alone costs ~18 ms), no user or environment paths (the agent's PYTHONPATH cannot put modules
    of its own in front of the hook's standard library).
    """
    argv = (bash, "-p", str(HOOK_SCRIPT), event, python) if bash else (python, "-S", "-I", str(HOOK_PY), event)
    return " ".join(shlex.quote(p) for p in argv)


def settings_document(python: str = sys.executable, bash: str | None = None) -> dict[str, Any]:
    """The ``--settings`` JSON: every event of interest reports through the chosen hook client."""
    return {
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": hook_command(event, python, bash),
                                "timeout": HOOK_TIMEOUT_S}]}]
            for event in EVENTS
        }
    }


def write_settings(state_dir: Path, session: str, *, python: str = sys.executable,
                   redis_url: str | None = None) -> Path:
    """Write (atomically) the per-launch settings file; the user's own settings are never touched."""
    path = settings_path(state_dir, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    document = settings_document(python, bash_for_hooks(redis_url))
    tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
