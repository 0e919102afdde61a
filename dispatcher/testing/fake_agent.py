"""A fake Claude Code TUI for tests and benchmarks (a program: it draws on its tty).

``python -m dispatcher.testing.fake_agent --model sonnet --dangerously-skip-permissions
[--resume UUID] [--session-id UUID] [--settings FILE]``

Imitates the screens of the real CLI (tests/fixtures/claude_screens): optional
startup dialog (FAKE_AGENT_DIALOG=trust|apikey|bypass; or the trust dialog
whenever $FAKE_AGENT_CLAUDE_JSON, read like ~/.claude.json, does not hold
``"projects": {"<cwd>": {"hasTrustDialogAccepted": true}}``), boot delay
(FAKE_AGENT_BOOT_MS), the CLI version to imitate where screens differ
(FAKE_AGENT_VERSION=2.1.197, the default, or 2.1.332: ``/exit`` prints
``claude --model … --resume``; an API error ends the turn without
``✻ … for Ns``), the ``❯``+NBSP input line between rules, bracketed
paste with ``[Pasted text #N +M lines]``, a busy spinner with ``esc to
interrupt``, ``✻ Worked for Ns``, ``/exit`` printing the resume command, and
the hooks of a ``--settings`` file run like Claude Code runs them. Every
message received is appended as a JSON line to $FAKE_AGENT_LOG.

Scripted behaviour from ``@fake: <cmd> [arg]`` lines in a message:
``sleep MS`` (stay busy), ``done`` (move inbox/<id>.md.dispatched to done/<id>.md),
``fail`` (finish without doing it), ``await NAME`` (busy until the queue dir holds NAME),
``write FILE`` (a file in the cwd), ``commit`` (git add -A + commit in the cwd),
``limit`` (usage-limit text + StopFailure; a later
bare message for the same task, i.e. the resume's "continue", then completes it),
``hang`` (busy until interrupted), ``exit [CODE]`` (exit the process at once),
``error 429|529`` (the turn ends with that API error on screen + StopFailure; a later
bare message for the same task completes it, like ``limit``).
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import queue
import re
import select
import subprocess
import sys
import termios
import threading
import time
import tty
import uuid
from pathlib import Path
from typing import Any

PROMPT = "❯\u00a0"
LIMIT_TEXT = "You've hit your limit · resets 2pm (America/Toronto)"
NEWEST = "2.1.332"
#: API error texts by (status, version) and the StopFailure ``error`` the CLI reports with them.
API_ERRORS = {
    ("429", "2.1.197"): "API Error: Request rejected (429) · Fake rate limit for tests",
    ("429", NEWEST): "API Error: Request rejected (429) · Fake rate limit for tests",
    ("529", "2.1.197"): 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    ("529", NEWEST): "API Error: 529 Overloaded. This is a server-side issue, "
                     "usually temporary — try again in a moment.",
}
HOOK_ERRORS = {"429": "rate_limit", "529": "server_error"}
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
# A directive starts a line, or follows the "[<id>.md] " tag on the first line.
_DIRECTIVE = re.compile(r"^(?:\[[^\]\n]*\]\s*)?@fake:\s*(\w+)(?:\s+(\S+))?\s*$", re.M)
_TAG = re.compile(r"^\[([A-Za-z0-9._-]+)\.md\]")
_DIALOGS = {
    "trust": ["Accessing workspace:", "{cwd}", "",
              "Quick safety check: Is this a project you created or one you trust?",
              "", "❯ 1. Yes, I trust this folder", "  2. No, exit", "", "Enter to confirm · Esc to cancel"],
    "apikey": ["Detected a custom API key in your environment", "ANTHROPIC_API_KEY: sk-ant-...fake",
               "Do you want to use this API key?", "  1. Yes", "❯ 2. No (recommended)", "",
               "Enter to confirm · Esc to cancel"],
    "bypass": ["WARNING: Claude Code running in Bypass Permissions mode", "", "❯ 1. No, exit", "  2. Yes, I accept",
               "", "Enter to confirm · Esc to cancel"],
}


class Hooks:
    """Runs the command hooks of a settings file in order, on one thread, like the CLI does."""

    def __init__(self, settings: str | None, base: dict[str, Any]) -> None:
        self.table: dict[str, Any] = {}
        if settings:
            try:
                self.table = json.loads(Path(settings).read_text(encoding="utf-8")).get("hooks", {}) or {}
            except (OSError, ValueError):
                self.table = {}
        self.base = base
        self.jobs: queue.Queue[tuple[str, dict[str, Any], str, threading.Event]] = queue.Queue()
        threading.Thread(target=self._worker, daemon=True).start()

    def fire(self, event: str, extra: dict[str, Any] | None = None, match: str = "", wait: bool = False) -> None:
        """Queue the hooks of ``event``; with ``wait`` block until they ran (UserPromptSubmit)."""
        if event not in self.table:
            return
        done = threading.Event()
        self.jobs.put((event, {**self.base, "hook_event_name": event, **(extra or {})}, match, done))
        if wait:
            done.wait(30)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued hook ran (before exiting)."""
        done = threading.Event()
        self.jobs.put(("", {}, "", done))
        done.wait(timeout)

    def _worker(self) -> None:
        while True:
            event, payload, match, done = self.jobs.get()
            try:
                for group in self.table.get(event, []) if event else []:
                    matcher = group.get("matcher") or ""
                    if matcher not in ("", "*") and not re.fullmatch(matcher, match):
                        continue
                    for hook in group.get("hooks", []):
                        if hook.get("type") == "command":
                            try:
                                subprocess.run(hook["command"], shell=True, input=json.dumps(payload).encode(),
                                               capture_output=True, timeout=float(hook.get("timeout", 60)),
                                               cwd=payload.get("cwd"), check=False)
                            except (OSError, subprocess.SubprocessError):
                                pass
            finally:
                done.set()


class FakeAgent:
    """State and behaviour of one fake agent process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cwd = os.getcwd()
        # Where the task files are: the project's queue (absolute) when the agent works in a worktree.
        self.queue = Path(self.cwd, os.environ.get("AQ_QUEUE_DIR") or ".agent-queue")
        self.session_id = args.session_id or args.resume or str(uuid.uuid4())
        self.log_path = os.environ.get("FAKE_AGENT_LOG")
        self.busy_ms = int(os.environ.get("FAKE_AGENT_BUSY_MS", "100"))
        self.dialog = os.environ.get("FAKE_AGENT_DIALOG") or (None if self._trusted() else "trust")
        self.version = NEWEST if os.environ.get("FAKE_AGENT_VERSION") == NEWEST else "2.1.197"
        self.input_hint = ""  # 2.1.332 after an API error: "Resend your message to try again"
        self.history: list[str] = []
        self.segments: list[tuple[str, str]] = []  # (shown, real) parts of the input
        self.pastes = 0
        self.queued: list[str] = []
        self.busy = False
        self.turn_started = 0.0
        self.steps: list[tuple[str, str | None]] = []
        self.wake_at: float | None = None
        self.outcome = "Done."
        self.hooks = Hooks(args.settings, {"session_id": self.session_id, "cwd": self.cwd,
                                           "transcript_path": f"/tmp/fake-agent/{self.session_id}.jsonl"})
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""
        self.task_id: str | None = None
        self.in_paste = False
        self.paste_buf = ""

    def _trusted(self) -> bool:
        """Like the CLI: a folder is trusted when the config file says so (no file configured: trusted)."""
        path = os.environ.get("FAKE_AGENT_CLAUDE_JSON")
        if not path:
            return True
        try:
            projects = json.loads(Path(path).read_text(encoding="utf-8")).get("projects") or {}
        except (OSError, ValueError, AttributeError):
            return False
        entry = projects.get(self.cwd) if isinstance(projects, dict) else None
        return isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True

    # -- output -----------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        if not self.log_path:
            return
        entry = {"event": event, "time": time.time(), "cwd": self.cwd, "model": self.args.model,
                 "session_id": self.session_id, "resume": self.args.resume, "argv": sys.argv[1:],
                 # Which pool session (HOST/NAME) and which tmux server this agent runs under (multi-host tests).
                 "aq_session": os.environ.get("AQ_SESSION", ""), "tmux": os.environ.get("TMUX", ""), **fields}
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def render(self, tail: list[str] | None = None) -> None:
        try:  # the tty's real size: $LINES/$COLUMNS inherited from elsewhere would be wrong
            cols, rows = os.get_terminal_size(1)
        except OSError:
            cols, rows = 200, 50
        if self.dialog:
            body = ["─" * cols] + [" " + line.format(cwd=self.cwd) for line in _DIALOGS[self.dialog]]
        else:
            shown = "".join(s for s, _ in self.segments).split("\n")
            status = ((["✻ Working…"] + [f"  ❯ {q.splitlines()[0] if q else ''}" for q in self.queued])
                      if self.busy else [])
            hint = "Press up to edit queued messages" if self.queued else self.input_hint
            first = hint if hint and not shown[0] else shown[0]
            footer = "  ⏵⏵ bypass permissions on (shift+tab to cycle)" + (" · esc to interrupt" if self.busy else "")
            box = ["─" * cols, PROMPT + first] + ["  " + s for s in shown[1:]] + ["─" * cols, footer]
            bottom = status + box + (tail or [])
            body = self.history[-max(0, rows - len(bottom)):] + bottom if rows > len(bottom) else bottom
        body = [line[:cols] for line in body[-rows:]]
        out = "\x1b[H" + "".join(line + "\x1b[K\r\n" for line in body[:-1]) + body[-1] + "\x1b[K\x1b[J"
        os.write(1, out.encode("utf-8"))

    # -- input ------------------------------------------------------------------

    def feed(self, data: bytes, flush: bool = False) -> None:
        """Parse raw tty input: bracketed pastes, Enter, Escape, C-u, C-c, backspace, text."""
        self.pending += self.decoder.decode(data)
        while self.pending:
            if not self.in_paste and not flush and len(self.pending) < len(PASTE_START) \
                    and PASTE_START.startswith(self.pending):
                break  # maybe the start of a paste split across reads; flushed as Escape after a pause
            if self.in_paste:
                # Search the whole paste so far: the end marker may be split across reads.
                self.paste_buf, self.pending = self.paste_buf + self.pending, ""
                end = self.paste_buf.find(PASTE_END)
                if end < 0:
                    return
                text, self.pending = self.paste_buf[:end], self.paste_buf[end + len(PASTE_END):]
                self.in_paste, self.paste_buf = False, ""
                self.on_paste(text)
                continue
            if self.pending.startswith(PASTE_START):
                self.in_paste, self.pending = True, self.pending[len(PASTE_START):]
                continue
            ch, self.pending = self.pending[0], self.pending[1:]
            if ch == "\x1b":
                m = re.match(r"(\[[0-?]*[ -/]*[@-~]|O.)", self.pending)
                if m:
                    self.pending = self.pending[m.end():]  # a cursor/function key: ignored
                else:
                    self.on_escape()
            elif ch in "\r\n":
                self.on_enter()
            elif ch == "\x15":
                self.segments = []
            elif ch == "\x03":
                self.on_escape() if self.busy else self.segments.clear()
            elif ch in "\x7f\x08":
                self.backspace()
            elif ch >= " " or ch == "\t":
                self.type_text(ch)
        self.render()

    def type_text(self, text: str) -> None:
        if self.dialog:
            self.log("dialog_input", text=text)
            return
        if self.segments and self.segments[-1][0] == self.segments[-1][1]:
            shown, real = self.segments[-1]
            self.segments[-1] = (shown + text, real + text)
        else:
            self.segments.append((text, text))

    def backspace(self) -> None:
        if self.segments:
            shown, real = self.segments.pop()
            if shown == real and len(real) > 1:
                self.segments.append((shown[:-1], real[:-1]))

    def on_paste(self, text: str) -> None:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self.dialog:
            self.log("dialog_input", text=text)
            return
        newlines = text.count("\n")
        if newlines > 2 or len(text) > 800:
            self.pastes += 1
            self.segments.append((f"[Pasted text #{self.pastes} +{newlines} lines]", text))
        else:
            self.segments.append((text, text))

    def on_escape(self) -> None:
        if self.dialog:
            self.log("dialog_input", text="<Escape>")
        elif self.busy:
            self.history.append("  ⎿  Interrupted · What should Claude do instead?")
            self.busy, self.steps, self.wake_at, self.queued = False, [], None, []
        else:
            self.segments = []

    def on_enter(self) -> None:
        if self.dialog:
            self.log("dialog_input", text="<Enter>")
            if self.dialog == "bypass":
                self.quit(1)
            self.dialog = None
            self.hooks.fire("SessionStart", {"source": "resume" if self.args.resume else "startup"})
            return
        text = "".join(real for _, real in self.segments)
        if not text.strip():
            return
        self.segments = []
        if text.strip() == "/exit":
            self.quit(0, exit_text=True)
        if self.busy:
            self.queued.append(text)
            return
        self.start_turn(text)

    # -- turns ------------------------------------------------------------------

    def start_turn(self, text: str) -> None:
        self.input_hint = ""
        lines = text.split("\n")
        self.history += ["❯ " + lines[0]] + ["  " + line for line in lines[1:]]
        self.busy, self.turn_started, self.outcome = True, time.monotonic(), "Done."
        self.log("message", text=text)
        self.render()
        self.hooks.fire("UserPromptSubmit", {"prompt": text, "prompt_id": str(uuid.uuid4())}, wait=True)
        self.steps = [(m.group(1).lower(), m.group(2)) for m in _DIRECTIVE.finditer(text)]
        if not any(cmd in ("sleep", "hang") for cmd, _ in self.steps):
            self.steps.insert(0, ("sleep", str(self.busy_ms)))
        self.task_id = (_TAG.match(text) or [None, None])[1]
        if self.task_id and not self.steps[1:] and self._limit_marker().exists():
            # Resumed after a usage limit with a bare "continue": finish the interrupted work.
            self._limit_marker().unlink()
            self.steps.append(("done", None))
        self.advance()

    def _limit_marker(self) -> Path:
        return self.queue / f".fake-limited-{self.task_id}"

    def advance(self) -> None:
        """Run scripted steps until one makes the agent wait, then finish the turn."""
        while self.steps:
            cmd, arg = self.steps.pop(0)
            if cmd == "sleep":
                self.wake_at = time.monotonic() + int(arg or "0") / 1000
                return
            if cmd == "hang":
                self.wake_at = None
                self.steps = [("hang", None)]
                return
            if cmd == "exit":
                self.hooks.drain()
                self.restore()
                os._exit(int(arg or "1"))
            if cmd == "done" and self.task_id:
                src = self.queue / "inbox" / f"{self.task_id}.md.dispatched"
                dst = self.queue / "done" / f"{self.task_id}.md"
                # The dispatcher promotes .launching → .dispatched just after it sees the submit:
                # a real agent takes seconds before its first tool call, this one must wait for it.
                deadline = time.monotonic() + 10
                while not src.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                try:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
                    self.outcome = f"Moved {self.task_id}.md to done/."
                    self.log("done", task=self.task_id)
                except OSError as exc:
                    self.outcome = f"Could not move the task: {exc}"
            elif cmd == "await" and arg and "/" not in arg:
                if not (self.queue / arg).exists():  # busy until the test creates the file in the queue dir
                    self.steps.insert(0, (cmd, arg))
                    self.wake_at = time.monotonic() + 0.05
                    return
            elif cmd == "write" and arg and "/" not in arg and arg not in (".", ".."):
                Path(self.cwd, arg).write_text(f"written for {self.task_id}\n", encoding="utf-8")
            elif cmd == "commit":
                for argv in (["git", "add", "-A", "."], ["git", "commit", "-q", "-m", f"work on {self.task_id}"]):
                    subprocess.run(argv, cwd=self.cwd, capture_output=True, check=False, timeout=30)
            elif cmd == "fail":
                self.outcome = "I could not complete this task."
            elif cmd in ("limit", "error"):
                if self.task_id:
                    self._limit_marker().touch()
                self.finish(limit=True, status=arg if cmd == "error" else None)
                return
        self.finish()

    def finish(self, limit: bool = False, status: str | None = None) -> None:
        secs = int(time.monotonic() - self.turn_started)
        said = API_ERRORS.get((status or "", self.version), f"API Error: {status}") if status else LIMIT_TEXT
        self.history.append(f"● {said if limit else self.outcome}")
        if status and self.version == NEWEST:
            self.input_hint = "Resend your message to try again"  # and no "✻ … for Ns" line
        else:
            self.history.append(f"✻ Worked for {secs}s")
        self.busy, self.steps, self.wake_at = False, [], None
        self.render()
        if limit:
            error = HOOK_ERRORS.get(status or "", "unknown") if status else "rate_limit"
            payload = {"error": error, "last_assistant_message": said}
            if not status:
                payload["error_type"] = "rate_limit"  # the older documented key, kept for the limit tests
            self.hooks.fire("StopFailure", payload)
        else:
            self.hooks.fire("Stop", {"stop_hook_active": False, "last_assistant_message": self.outcome})
        if self.queued:
            self.start_turn(self.queued.pop(0))

    def tick(self) -> None:
        if self.busy and self.wake_at is not None and time.monotonic() >= self.wake_at:
            self.wake_at = None
            self.advance()
            self.render()

    # -- process ----------------------------------------------------------------

    def restore(self) -> None:
        try:
            os.write(1, b"\x1b[?2004l")
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved_tty)
        except (OSError, termios.error, AttributeError):
            pass

    def quit(self, code: int, exit_text: bool = False) -> None:
        if exit_text:
            model = f"--model {self.args.model} " if self.version == NEWEST else ""
            self.render(tail=["Resume this session with:", f"claude {model}--resume {self.session_id}"])
            self.hooks.fire("SessionEnd", {"reason": "prompt_input_exit"})
        self.log("exit", code=code)
        self.hooks.drain()
        self.restore()
        os._exit(code)

    def run(self) -> None:
        try:
            self.saved_tty = termios.tcgetattr(0)
            tty.setraw(0)
        except termios.error:
            pass
        # $FAKE_AGENT_EXEC (epoch seconds, set by a wrapper at exec, e.g. bash's $EPOCHREALTIME): when this
        # process began, so a benchmark can take the agent's own start-up out of the dispatch overhead.
        exec_time = _float(os.environ.get("FAKE_AGENT_EXEC"))
        self.log("start", **({"exec_time": exec_time} if exec_time is not None else {}))
        boot = int(os.environ.get("FAKE_AGENT_BOOT_MS", "0")) / 1000
        os.write(1, b"\x1b[H\x1b[2J Fake Claude Code starting")
        ready_at = time.monotonic() + boot
        while time.monotonic() < ready_at:  # input typed during boot is read (and lost) like the real CLI
            if select.select([0], [], [], max(0.0, ready_at - time.monotonic()))[0]:
                os.read(0, 65536)
        os.write(1, b"\x1b[?2004h")  # bracketed paste on, before the prompt shows
        self.render()
        if not self.dialog:
            self.log("ready")  # the prompt is drawn: from here on, waiting is the dispatcher's
            self.hooks.fire("SessionStart", {"source": "resume" if self.args.resume else "startup"})
        while True:
            timeout = None if self.wake_at is None else max(0.0, self.wake_at - time.monotonic())
            if self.pending and not self.in_paste:
                timeout = 0.03 if timeout is None else min(timeout, 0.03)
            if select.select([0], [], [], timeout)[0]:
                data = os.read(0, 65536)
                if not data:
                    self.quit(0)
                self.feed(data)
            elif self.pending and not self.in_paste:
                self.feed(b"", flush=True)
            self.tick()


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> None:
    """Parse the claude-like arguments and run the fake TUI."""
    parser = argparse.ArgumentParser(prog="claude-fake")
    parser.add_argument("--model", default="sonnet")
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("--resume")
    parser.add_argument("--session-id")
    parser.add_argument("--settings")
    # Like `claude --version` (dispatcher doctor reads it).
    parser.add_argument("--version", action="version", version=f"{os.environ.get('FAKE_AGENT_VERSION') or '2.1.197'}"
                                                               " (Claude Code)")
    args, _unknown = parser.parse_known_args(argv)
    FakeAgent(args).run()


if __name__ == "__main__":
    main()
