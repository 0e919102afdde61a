"""End-to-end: the real Claude Code CLI in tmux against the local fake Messages API.

Run with ``AQ_E2E=1 python -m pytest tests/e2e -q``.  No mocks: a real tmux server
on a private socket, the real CLI (pinned and newest, see conftest.py), a real HTTP
server.  Every wait polls the screen, the request log or the hook log with a deadline.
Assertions hold on both versions; differences are in FINDINGS.md.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

from dispatcher.core import screen as prod_screen  # production parsers, cross-checked on live screens
from tests.e2e import harness
from tests.e2e.conftest import ClaudeCLI, HookLog
from tests.e2e.fake_api import BashToolUse, Error429, FakeAnthropicAPI, Overloaded529, Text
from tests.e2e.harness import (
    RESUME_RE,
    RawTmux,
    as_delivered,
    choose,
    cursor_line,
    has_dialog,
    has_ready_prompt,
    is_busy,
    is_ready,
    model_family,
    unwrap_pasted,
    wait_screen,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HOSTILE_BODY = "\n".join(
    f"line {i:02d}:\t\"double\" 'single' `backtick` $(touch PWNED-{i}) ${{HOME}} ; && | > x"
    f" \\n C-c Enter Escape → ✓ é 中文 🚀 %s %% zero\u200bwidth\u200c\u200d"
    for i in range(1, 31)
)


def start_claude(
    tmux: RawTmux, name: str, cwd: Path, claude_bin: str, env: dict[str, str], *args: str,
    model: str = "sonnet",
) -> None:
    tmux.new_session(name, cwd, [claude_bin, "--model", model, "--dangerously-skip-permissions", *args], env)


def submit(tmux: RawTmux, name: str, text: str, api: FakeAnthropicAPI, marker: str, timeout: float = 20):
    """Bracketed-paste ``text``, press Enter once, return the turn request carrying ``marker``."""
    tmux.paste(name, text)
    wait_screen(tmux, name, lambda s: marker in s or "[Pasted text" in s, 10, what="pasted text on screen")
    tmux.send_keys(name, "Enter")
    return api.wait_for_request(lambda r: r.is_turn and marker in r.last_user_text(), timeout)


def wait_turn_done(tmux: RawTmux, name: str, api: FakeAnthropicAPI, answer: str, timeout: float = 20) -> str:
    return wait_screen(
        tmux, name, lambda s: is_ready(s) and f"● {answer}" in s, timeout, what=f"turn finished with {answer!r}"
    ).screen


# --------------------------------------------------------------------------- readiness


def test_ready_with_preseeded_config(claude_bin, raw_tmux, project_dir, claude_env, fake_api):
    start_claude(raw_tmux, "ccl-auto-1", project_dir, claude_bin, claude_env)
    w = wait_screen(raw_tmux, "ccl-auto-1", is_ready, 30, what="ready prompt")
    assert "\u276f\u00a0" in w.screen
    assert "bypass permissions on" in w.screen
    assert not has_dialog(w.screen)
    assert prod_screen.prompt_ready(w.screen) and prod_screen.detect_dialog(w.screen) is None
    # The ready prompt also stays during a turn: busy must be told apart.
    fake_api.script(Text("held answer", gate=fake_api.gate))
    fake_api.gate.clear()
    raw_tmux.paste("ccl-auto-1", "hello")
    wait_screen(raw_tmux, "ccl-auto-1", lambda s: "hello" in s, 10)
    raw_tmux.send_keys("ccl-auto-1", "Enter")
    busy = wait_screen(raw_tmux, "ccl-auto-1", is_busy, 15, what="busy").screen
    assert has_ready_prompt(busy) and not is_ready(busy)
    assert "esc to interrupt" in busy
    assert prod_screen.is_busy(busy) and not prod_screen.prompt_ready(busy)
    assert prod_screen.shows_submitted(busy, "hello")
    fake_api.release()
    done = wait_turn_done(raw_tmux, "ccl-auto-1", fake_api, "held answer")
    assert re.search(r"^✻ \S+ for \d+s", done, re.M), done
    assert prod_screen.turn_finished(done) and prod_screen.prompt_ready(done)


def test_dialogs_without_preseeding_block_readiness(
    claude_cli: ClaudeCLI, claude_bin, raw_tmux, project_dir, bare_home, fake_api
):
    env = harness.claude_env(bare_home, fake_api.base_url)
    start_claude(raw_tmux, "s", project_dir, claude_bin, env)
    # (dialog marker, the accepting option, the option under the cursor at first, dialog name).
    # Enter on the default never gets past all three: the API key and bypass dialogs default to
    # No (bypass: "No, exit"); the trust dialog defaults to Yes in 2.1.197, to "No, exit" in 2.1.332.
    trust_default = "Yes, I trust this folder" if claude_cli.is_pinned else "No, exit"
    expected = [
        ("Yes, I trust this folder", "Yes, I trust this folder", trust_default, "trust folder"),
        ("Detected a custom API key", "Yes", "No (recommended)", "custom API key"),
        ("Bypass Permissions mode", "Yes, I accept", "No, exit", "bypass permissions"),
    ]
    for marker, accept, default, dialog_name in expected:
        screen = wait_screen(raw_tmux, "s", lambda s: marker in s or is_ready(s), 30,
                             what=f"dialog {marker!r}").screen
        assert marker in screen, f"expected dialog {marker!r}, got:\n{screen}"
        assert "❯ " in screen                      # menu cursor looks like a prompt ...
        assert not has_ready_prompt(screen)         # ... but is not the ❯+NBSP input line
        assert not is_ready(screen)
        assert prod_screen.detect_dialog(screen) == dialog_name and not prod_screen.prompt_ready(screen)
        cur = cursor_line(screen)
        assert cur is not None and default in cur[1], screen
        choose(raw_tmux, "s", accept)  # confirmed moves; the cursor must then stay put
        raw_tmux.send_keys("s", "Enter")
        wait_screen(raw_tmux, "s", lambda s: marker not in s, 10, what=f"dialog {marker!r} gone")
    wait_screen(raw_tmux, "s", is_ready, 30, what="ready after dialogs")
    fake_api.script(Text("answered"))
    submit(raw_tmux, "s", "ping", fake_api, "ping")
    wait_turn_done(raw_tmux, "s", fake_api, "answered")


# --------------------------------------------------------------------------- delivery


def test_hostile_30_line_body_arrives_intact_with_one_enter(
    claude_bin, raw_tmux, project_dir, claude_env, fake_api, hook_log: HookLog
):
    """Byte-exact modulo the CLI's own rewrites: tab → 4 spaces; 2.1.332 wraps the paste in
    ``<pasted_content id=…>`` and drops zero-width characters."""
    sid = str(uuid.uuid4())
    env = {**claude_env, "AQ_SESSION": "ccl-auto-1", "AQ_TASK": "T-7"}
    start_claude(raw_tmux, "ccl-auto-1", project_dir, claude_bin, env,
                 "--settings", str(hook_log.settings), "--session-id", sid)
    wait_screen(raw_tmux, "ccl-auto-1", is_ready, 30, what="ready")
    fake_api.script(Text("received"))
    raw_tmux.paste("ccl-auto-1", HOSTILE_BODY)
    pasted = wait_screen(raw_tmux, "ccl-auto-1", lambda s: "[Pasted text #1 +29 lines]" in s, 10).screen
    assert "paste again to expand" in pasted
    assert prod_screen.has_paste_placeholder(pasted)
    n_turns = len(fake_api.turns())
    raw_tmux.send_keys("ccl-auto-1", "Enter")  # exactly one Enter
    req = fake_api.wait_for_request(lambda r: r.is_turn and "line 30:" in r.last_user_text(), 20)
    assert len(fake_api.turns()) == n_turns + 1
    got = req.user_texts()[-1]
    assert unwrap_pasted(got) in as_delivered(HOSTILE_BODY)
    wait_turn_done(raw_tmux, "ccl-auto-1", fake_api, "received")
    # Nothing in the body was executed by a shell.
    assert not list(project_dir.glob("PWNED-*"))
    # UserPromptSubmit carries the same text, our session id and our env.
    wait_until(lambda: hook_log.named("Stop"), 10, what="Stop hook")
    (ups,) = hook_log.named("UserPromptSubmit")
    assert unwrap_pasted(ups["prompt"]) == unwrap_pasted(got)
    assert ups["session_id"] == sid
    assert ups["cwd"] == str(project_dir)
    assert ups["_env"]["AQ_TASK"] == "T-7" and ups["_env"]["AQ_SESSION"] == "ccl-auto-1"
    assert ups["_env"]["TMUX_PANE"].startswith("%")
    (start,) = hook_log.named("SessionStart")
    assert start["source"] == "startup" and start["session_id"] == sid
    (stop,) = hook_log.named("Stop")
    assert stop["session_id"] == sid and stop["stop_hook_active"] is False
    assert stop.get("last_assistant_message") == "received"


@pytest.mark.parametrize("alias", ["sonnet", "opus"])
def test_model_flag_and_working_directory(claude_bin, raw_tmux, project_dir, claude_env, fake_api, alias):
    start_claude(raw_tmux, "m", project_dir, claude_bin, claude_env, model=alias)
    wait_screen(raw_tmux, "m", is_ready, 30, what="ready")
    req = submit(raw_tmux, "m", "which model?", fake_api, "which model?")
    # The alias is resolved to a full id (claude-opus-4-8 / claude-opus-5-5 …): check the family only.
    assert model_family(req.model) == alias and req.model != alias, req.model
    # In the system prompt (2.1.197) or in a role "system" message (2.1.332).
    assert f"Primary working directory: {project_dir}" in req.context_text
    assert "Bash" in req.tool_names


# --------------------------------------------------------------------------- work & failure


def test_task_moved_to_done_by_bash_tool_call(
    claude_bin, raw_tmux, project_dir, claude_env, fake_api, hook_log: HookLog
):
    task = project_dir / "tasks" / "T-42.md"
    task.write_text("---\nid: T-42\n---\nDo the thing.\n")
    done = project_dir / ".agent-queue" / "done" / "T-42.md"
    fake_api.script(BashToolUse("mv tasks/T-42.md .agent-queue/done/T-42.md", then="Task done."))
    start_claude(raw_tmux, "w", project_dir, claude_bin, claude_env, "--settings", str(hook_log.settings))
    wait_screen(raw_tmux, "w", is_ready, 30, what="ready")
    submit(raw_tmux, "w", "[tasks/T-42.md] Do the thing. When finished, move your task file to "
           ".agent-queue/done/T-42.md", fake_api, "[tasks/T-42.md]")
    wait_until(done.exists, 20, what="task moved to done/")
    assert not task.exists()
    follow = fake_api.wait_for_request(lambda r: r.is_turn and r.tool_results(), 20)
    (result,) = follow.tool_results()
    assert not result.get("is_error")
    wait_turn_done(raw_tmux, "w", fake_api, "Task done.")
    wait_until(lambda: hook_log.named("Stop"), 10, what="Stop hook")
    assert hook_log.named("Stop")[-1]["last_assistant_message"] == "Task done."


def test_rate_limit_shows_error_and_fires_stop_failure(
    claude_bin, raw_tmux, project_dir, claude_env, fake_api, hook_log: HookLog
):
    # First 429 is retried by the CLI (retry-after 2 s), the second one is final.
    fake_api.script(Error429("Fake limit for e2e", retry_after=2),
                    Error429("Fake limit for e2e", should_retry=False))
    start_claude(raw_tmux, "r", project_dir, claude_bin, claude_env, "--settings", str(hook_log.settings))
    wait_screen(raw_tmux, "r", is_ready, 30, what="ready")
    submit(raw_tmux, "r", "hit the limit", fake_api, "hit the limit")
    retrying = wait_screen(raw_tmux, "r", lambda s: harness.RETRY_RE.search(s) is not None, 10,
                           what="retry line").screen
    # The retry line has no spinner ellipsis (and after a long paste there is no
    # "esc to interrupt" either, see FINDINGS.md), yet the agent is busy.
    assert not harness.SPINNER_RE.search(retrying)
    assert is_busy(retrying) and not is_ready(retrying)
    assert prod_screen.is_busy(retrying) and not prod_screen.prompt_ready(retrying)
    screen = wait_screen(raw_tmux, "r", lambda s: "Request rejected (429)" in s and is_ready(s), 20).screen
    assert "● API Error: Request rejected (429) · Fake limit for e2e" in screen
    limit = prod_screen.detect_limit(screen)
    assert limit is not None and limit.kind == "rate_limit"
    # 2.1.332 prints no "✻ <Verb> for Ns" after an API error: the error line itself ends the turn.
    assert prod_screen.prompt_ready(screen) and prod_screen.turn_finished(screen)
    wait_until(lambda: hook_log.named("StopFailure"), 20, what="StopFailure hook")
    assert hook_log.named("StopFailure")[0]["error"] == "rate_limit"
    assert not hook_log.named("Stop")


def test_overloaded_529_screen_and_hooks(
    raw_tmux, claude_bin, project_dir, claude_env, fake_api, hook_log: HookLog
):
    """A final 529: what screen and hooks show (for the 429/529 classification), and the next
    prompt is merged with the failed one."""
    # 2.1.197 retries a 529 despite x-should-retry: false (up to 10 times, backing off); one retry
    # keeps the test short.  2.1.332 does not retry it at all.
    env = {**claude_env, "CLAUDE_CODE_MAX_RETRIES": "1"}
    fake_api.script(Overloaded529(times=2, should_retry=False))
    start_claude(raw_tmux, "o", project_dir, claude_bin, env, "--settings", str(hook_log.settings))
    wait_screen(raw_tmux, "o", is_ready, 30, what="ready")
    submit(raw_tmux, "o", "overload me", fake_api, "overload me")
    screen = wait_screen(raw_tmux, "o", lambda s: "API Error: 529" in s and is_ready(s), 30,
                         what="529 error").screen
    assert ("● API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. "
            "If it persists, check your inference gateway (127.0.0.1:") in screen
    assert not prod_screen.is_busy(screen) and prod_screen.prompt_ready(screen)
    assert prod_screen.input_text(screen) == ""  # 2.1.332: "❯ Resend your message to try again" is a hint
    assert prod_screen.turn_finished(screen)
    wait_until(lambda: hook_log.named("StopFailure"), 20, what="StopFailure hook")
    (failure,) = hook_log.named("StopFailure")
    assert failure["error"] == "server_error"
    assert failure["last_assistant_message"].startswith("API Error: 529 Overloaded.")
    assert not hook_log.named("Stop")
    fake_api.clear_script()  # 2.1.332 used one of the two 529s
    fake_api.script(Text("recovered"))
    req = submit(raw_tmux, "o", "next one", fake_api, "next one")
    assert "overload me" in req.last_user_text()  # the failed prompt is sent again with the new one
    wait_turn_done(raw_tmux, "o", fake_api, "recovered")


# --------------------------------------------------------------------------- resume


def test_resume_after_exit_keeps_session_id(
    claude_bin, raw_tmux, project_dir, claude_env, fake_api, hook_log: HookLog
):
    sid = str(uuid.uuid4())
    args = ("--settings", str(hook_log.settings))
    start_claude(raw_tmux, "a", project_dir, claude_bin, claude_env, *args, "--session-id", sid)
    wait_screen(raw_tmux, "a", is_ready, 30, what="ready")
    fake_api.script(Text("first answer"))
    submit(raw_tmux, "a", "remember the word zebra", fake_api, "zebra")
    wait_turn_done(raw_tmux, "a", fake_api, "first answer")
    raw_tmux.send_literal("a", "/exit")
    wait_screen(raw_tmux, "a", lambda s: "Exit the CLI" in s, 10, what="/exit menu")
    raw_tmux.send_keys("a", "Enter")
    wait_until(lambda: raw_tmux.pane_dead("a"), 15, what="claude exited")
    screen = raw_tmux.capture("a")
    assert "Resume this session with:" in screen
    m = RESUME_RE.search(screen)  # 2.1.332: "claude --model sonnet … --resume <uuid>"
    assert m and m.group(1) == sid
    assert prod_screen.has_exited(screen)
    prod_parsed = prod_screen.parse_resume_id(screen) == sid  # checked last (item 18)
    wait_until(lambda: hook_log.named("SessionEnd"), 10, what="SessionEnd hook")
    assert hook_log.named("SessionEnd")[0]["reason"] == "prompt_input_exit"

    start_claude(raw_tmux, "b", project_dir, claude_bin, claude_env, *args, "--resume", sid)
    ready = wait_screen(raw_tmux, "b", is_ready, 30, what="ready after resume").screen
    assert "zebra" in ready  # the old conversation is shown
    fake_api.script(Text("second answer"))
    req = submit(raw_tmux, "b", "what was the word?", fake_api, "what was the word?")
    assert any("zebra" in t for t in req.user_texts()[:-1])  # history sent to the model
    wait_turn_done(raw_tmux, "b", fake_api, "second answer")
    starts = hook_log.named("SessionStart")
    assert [s["source"] for s in starts] == ["startup", "resume"]
    assert {s["session_id"] for s in starts} == {sid}
    assert hook_log.named("UserPromptSubmit")[-1]["session_id"] == sid
    assert prod_parsed, f"dispatcher.core.screen.parse_resume_id misses {m.group(0)!r} (item 18)"


def test_resume_and_session_id_need_fork_session(claude_bin, project_dir, claude_env):
    """--resume X --session-id Y is refused unless --fork-session is given (checked before any I/O)."""
    p = subprocess.run(
        [claude_bin, "--resume", str(uuid.uuid4()), "--session-id", str(uuid.uuid4()), "-p", "hi"],
        cwd=project_dir, env=claude_env, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode != 0
    # 2.1.197: "Error: --session-id can only be used with --continue or --resume if --fork-session is also
    # specified."  2.1.332: "Error: --session-id with --continue or --resume also needs --fork-session."
    out = p.stderr + p.stdout
    assert out.startswith("Error: --session-id ") and "--fork-session" in out, out
