"""Helpers for the end-to-end tier: isolated HOME, environment, raw tmux, screen polling.

Kept free of pytest so that ``capture_screens.py`` can reuse it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTALL_SCRIPT = HERE / "install_claude.sh"
PACKAGE = "@anthropic-ai/claude-code"
#: The version the dispatcher is developed against (``AQ_CLAUDE_VERSION`` overrides it).
CLAUDE_VERSION = os.environ.get("AQ_CLAUDE_VERSION", "2.1.197")
API_KEY = "sk-ant-api03-fake-e2e-key-0123456789abcdefghijklmnopqrstuvwxyz"
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")

WIDTH, HEIGHT = 200, 50
PROMPT_READY = "\u276f\u00a0"  # ❯ + NBSP: the real input prompt


class InstallError(RuntimeError):
    """install_claude.sh failed (message: its stderr)."""


def install_claude(version: str = CLAUDE_VERSION) -> str:
    """Run install_claude.sh (idempotent, one cache dir per version) and return the path of ``claude``."""
    try:
        out = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "AQ_CLAUDE_VERSION": version},
            timeout=600,
        )
    except subprocess.CalledProcessError as exc:
        raise InstallError(f"exit {exc.returncode}: {exc.stderr.strip()[-2000:]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"timed out after {exc.timeout}s") from exc
    return out.stdout.strip().splitlines()[-1]


def latest_version(timeout: float = 60.0) -> str:
    """The newest release on the npm registry (``npm view <pkg> version``); raise OSError if it does not answer."""
    try:
        p = subprocess.run(
            ["npm", "view", PACKAGE, "version"],
            capture_output=True, text=True, timeout=timeout,
            cwd=tempfile.gettempdir(),  # no project .npmrc
        )
    except FileNotFoundError as exc:
        raise OSError("npm not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"npm view {PACKAGE} timed out after {timeout:.0f}s") from exc
    out = p.stdout.strip()
    if p.returncode != 0 or not VERSION_RE.match(out):
        lines = [x.strip() for x in (p.stderr or out).splitlines() if x.strip() and " at " not in x]
        raise OSError(f"npm view {PACKAGE} version failed (exit {p.returncode}): {' / '.join(lines[:4])[:500]}")
    return out


def seed_home(home: Path, project_dirs: list[Path], *, preseed: bool = True, version: str = CLAUDE_VERSION) -> Path:
    """Create an isolated HOME for the CLI.

    With ``preseed`` the onboarding, API-key, trust and bypass dialogs are all
    answered in advance.  Without it only ``hasCompletedOnboarding`` is set (the
    CLI ignores ANTHROPIC_BASE_URL before onboarding), so the trust, API-key and
    bypass dialogs appear.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / ".claude").mkdir(exist_ok=True)
    cfg: dict = {"hasCompletedOnboarding": True, "lastOnboardingVersion": version}
    if preseed:
        cfg["customApiKeyResponses"] = {"approved": [API_KEY[-20:]], "rejected": []}
        cfg["projects"] = {
            str(p): {"hasTrustDialogAccepted": True, "allowedTools": []} for p in project_dirs
        }
        (home / ".claude" / "settings.json").write_text(
            json.dumps({"skipDangerousModePermissionPrompt": True}, indent=2)
        )
    (home / ".claude.json").write_text(json.dumps(cfg, indent=2))
    return home


def claude_env(home: Path, base_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "IS_SANDBOX": "1",
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    env.update(extra or {})
    return env


class RawTmux:
    """Minimal tmux CLI wrapper on a private socket (used until/besides dispatcher.agent.tmux)."""

    def __init__(self, socket_name: str | None = None) -> None:
        self.socket_name = socket_name or f"aqe2e-{uuid.uuid4().hex[:12]}"

    def run(self, *args: str, check: bool = True, input: bytes | None = None) -> str:
        """Run a tmux command.  A bare ``";"`` argument separates commands; any other
        argument ending in ``;`` is escaped (tmux would read it as a separator)."""
        argv = [a if a == ";" or not a.endswith(";") else a[:-1] + "\\;" for a in args]
        p = subprocess.run(
            ["tmux", "-L", self.socket_name, *argv],
            input=input,
            capture_output=True,
            timeout=20,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"tmux {args!r} failed: {p.stderr.decode(errors='replace').strip()}")
        return p.stdout.decode("utf-8", "replace")

    def new_session(self, name: str, cwd: Path, command: list[str], env: dict[str, str]) -> None:
        """Start ``command`` in a new detached 200x50 session, through a shell that exports env."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # env -i drops the server's environment; keep the pane's own TMUX/TMUX_PANE.
        shell_cmd = f'exec env -i TMUX="$TMUX" TMUX_PANE="$TMUX_PANE" {exports} {shlex.join(command)}'
        self.run(
            "new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT),
            "-c", str(cwd), "bash", "--norc", "--noprofile", "-c", shell_cmd,
            ";", "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on",
        )

    def capture(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", f"={name}:")

    def send_keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", f"={name}:", *keys)

    def send_literal(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", f"={name}:", "-l", text)

    def paste(self, name: str, text: str) -> None:
        buf = f"aq-{uuid.uuid4().hex[:8]}"
        self.run("load-buffer", "-b", buf, "-", input=text.encode())
        self.run("paste-buffer", "-p", "-d", "-b", buf, "-t", f"={name}:")

    def pane_dead(self, name: str) -> bool:
        return self.run("display-message", "-p", "-t", f"={name}:", "#{pane_dead}").strip() == "1"

    def kill_server(self) -> None:
        self.run("kill-server", check=False)


# --------------------------------------------------------------------------- screen

SPINNER_RE = re.compile(r"^[·✢*✶✻✽✳] \S.*…", re.M)
DIALOG_MARKERS = (
    "Do you trust the files in this folder",
    "Yes, I trust this folder",
    "Detected a custom API key",
    "Bypass Permissions mode",
)


def has_ready_prompt(screen: str) -> bool:
    return any(line.startswith(PROMPT_READY) for line in screen.splitlines())


# "Retrying" in 2.1.197, "retrying" in 2.1.332.
RETRY_RE = re.compile(r"^\S API error · [Rr]etrying in \d+s · attempt \d+/\d+", re.M)


def is_busy(screen: str) -> bool:
    """Spinner ``<sym> <Verb>…``, ``esc to interrupt`` (absent after a long paste: the footer
    then says ``paste again to expand``), or an API retry line (no spinner, no footer hint)."""
    return "esc to interrupt" in screen or bool(SPINNER_RE.search(screen)) or bool(RETRY_RE.search(screen))


def has_dialog(screen: str) -> bool:
    return any(m in screen for m in DIALOG_MARKERS)


def is_ready(screen: str) -> bool:
    return has_ready_prompt(screen) and not is_busy(screen) and not has_dialog(screen)


@dataclass
class Waited:
    screen: str
    elapsed: float


def wait_screen(
    tmux: RawTmux,
    name: str,
    pred: Callable[[str], bool],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Waited:
    """Poll the pane until ``pred(screen)``; raise TimeoutError with the last screen."""
    t0 = time.monotonic()
    screen = ""
    while True:
        screen = tmux.capture(name)
        if pred(screen):
            return Waited(screen, time.monotonic() - t0)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not seen within {timeout}s; last screen:\n{screen}")
        time.sleep(interval)  # poll interval, not synchronisation


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not true within {timeout}s")
        time.sleep(interval)


# --------------------------------------------------------------------------- version differences

# 2.1.197 prints ``claude --resume <uuid>``; 2.1.332 repeats the launch flags
# (``claude --model sonnet --dangerously-skip-permissions --settings <path> --resume <uuid>``) when
# they fit on one line and need no quoting, else it prints the short form too.
RESUME_RE = re.compile(r"^claude\b[^\n]*? --resume ([0-9a-f-]{36})[ \t]*$", re.M)
# 2.1.332 wraps a paste shown as ``[Pasted text #N …]`` in the request (and the hook's prompt).
PASTED_RE = re.compile(r'\A\n*<pasted_content id="([^"]*)">\n(.*)\n</pasted_content(?: id="\1")?>\n?\Z', re.S)
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d"))  # dropped from input by 2.1.332


def unwrap_pasted(text: str) -> str:
    """The pasted text inside a ``<pasted_content id=…>`` wrapper (2.1.332), else ``text`` unchanged."""
    m = PASTED_RE.match(text)
    return m.group(2) if m else text


def is_wrapped(text: str) -> bool:
    return PASTED_RE.match(text) is not None


def strip_zero_width(text: str) -> str:
    return text.translate(ZERO_WIDTH)


def as_delivered(text: str) -> set[str]:
    """What a pasted ``text`` may look like in the request: every tab becomes 4 spaces (all versions),
    zero-width characters survive (2.1.197) or are dropped (2.1.332)."""
    spaced = text.replace("\t", "    ")
    return {spaced, strip_zero_width(spaced)}


def model_family(model: str | None) -> str | None:
    """``opus``/``sonnet``/``haiku`` of a full model id (``claude-opus-4-8``, ``claude-opus-5-5`` …)."""
    m = re.match(r"^claude-(?:\d+-)*(opus|sonnet|haiku)\b", model or "")
    return m.group(1) if m else None


# --------------------------------------------------------------------------- dialogs

def cursor_line(screen: str) -> tuple[int, str] | None:
    """Index and text of a menu cursor line (``❯`` + normal space, indented), not the input line."""
    for i, line in enumerate(screen.splitlines()):
        if line.lstrip().startswith("❯ ") and not line.startswith(PROMPT_READY):
            return i, line.strip()
    return None


def choose(tmux: RawTmux, name: str, choice: str, timeout: float = 15.0, settle: float = 1.0) -> str:
    """Move a dialog's cursor onto the option containing ``choice`` and return the screen; never presses Enter.

    Each Up/Down is confirmed on screen (a dialog is drawn before it takes keys), and the cursor must then
    stay on ``choice`` for ``settle`` seconds: 2.1.332 redraws its trust dialog once, shortly after it
    first appears, with the cursor back on the default "No, exit"."""
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux.capture(name)
        cur = cursor_line(screen)
        if cur is not None and choice in cur[1]:
            try:
                wait_screen(tmux, name, lambda s: cursor_line(s) != cur, settle, what="cursor reset")
            except TimeoutError:
                return screen  # stayed put
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"cursor not on {choice!r} within {timeout}s; last screen:\n{screen}")
        target = next((i for i, line in enumerate(screen.splitlines()) if choice in line), None)
        if cur is None or target is None:
            time.sleep(0.05)  # poll interval: dialog not drawn yet
            continue
        tmux.send_keys(name, "Down" if target > cur[0] else "Up")
        try:
            wait_screen(tmux, name, lambda s: cursor_line(s) != cur, 1.0, what="cursor moved")
        except TimeoutError:
            pass  # key lost while the dialog was being drawn: send it again
