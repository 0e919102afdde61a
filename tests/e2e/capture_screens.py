"""Capture real Claude Code screens into tests/fixtures/claude_screens/.

Run:  python -m tests.e2e.capture_screens [outdir]
Needs npm (installs the pinned CLI via install_claude.sh) and tmux.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.e2e.fake_api import Error429, FakeAnthropicAPI, Text
from tests.e2e.harness import (
    RawTmux, claude_env, install_claude, is_busy, is_ready, seed_home, wait_screen, wait_until,
)
import re

RESUME_RE = re.compile(r"claude --resume [0-9a-f-]{36}")

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "claude_screens"

BODY_30 = "\n".join(
    f"line {i:02d}: \"quoted\" 'single' `tick` $(echo pwned) \t tab → ✓ é 中文" for i in range(1, 31)
)


def save(outdir: Path, name: str, screen: str) -> None:
    (outdir / name).write_text(screen, encoding="utf-8")
    print(f"saved {name}")


def main(outdir: Path = OUT) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    claude = install_claude()
    tmp = Path(tempfile.mkdtemp(prefix="aq-capture-"))
    proj = tmp / "proj"
    proj.mkdir()
    with FakeAnthropicAPI() as api:
        t = RawTmux()
        try:
            # ---------------- pre-seeded session -------------------------------------
            home = seed_home(tmp / "home", [proj])
            s = "cap"
            t.new_session(s, proj, [claude, "--model", "sonnet", "--dangerously-skip-permissions"],
                          claude_env(home, api.base_url))
            save(outdir, "ready.txt", wait_screen(t, s, is_ready, 30, what="ready").screen)

            # busy: hold the reply until we have the screen
            api.script(Text("Hello from the fake model.", gate=api.gate))
            t.paste(s, "Say hello")
            wait_screen(t, s, lambda x: "Say hello" in x, 10, what="typed text")
            t.send_keys(s, "Enter")
            save(outdir, "busy.txt", wait_screen(t, s, is_busy, 20, what="busy").screen)

            # queued: submit another message while busy
            t.paste(s, "A queued follow-up")
            wait_screen(t, s, lambda x: "A queued follow-up" in x, 10, what="typed follow-up")
            t.send_keys(s, "Enter")
            save(outdir, "queued.txt",
                 wait_screen(t, s, lambda x: "queued messages" in x, 10, what="queued").screen)
            api.release()
            save(outdir, "finished.txt",
                 wait_screen(t, s, lambda x: is_ready(x) and "Hello from the fake model." in x
                             and api.pending == 0 and "queued messages" not in x
                             and x.count("OK.") >= 1, 30, what="finished").screen)
            api.gate.clear()

            # pasted: 30-line paste placeholder before Enter
            t.paste(s, BODY_30)
            save(outdir, "pasted.txt",
                 wait_screen(t, s, lambda x: "[Pasted text" in x, 10, what="paste placeholder").screen)
            n_before = len(api.turns())
            t.send_keys(s, "Enter")
            api.wait_for_request(lambda r: r.is_turn and "line 30:" in r.last_user_text(), 15)
            wait_until(lambda: len(api.turns()) > n_before and is_ready(t.capture(s)), 30,
                       what="paste turn finished")

            # 429: first retried, then surfaced
            api.script(Error429("Fake rate limit reached for e2e", times=1, retry_after=1))
            api.script(Error429("Fake rate limit reached for e2e", times=1, should_retry=False))
            t.paste(s, "Trigger a rate limit")
            wait_screen(t, s, lambda x: "Trigger a rate limit" in x, 10, what="typed")
            t.send_keys(s, "Enter")
            api.wait_for_request(lambda r: r.is_turn and "Trigger a rate limit" in r.last_user_text(), 15)
            try:
                save(outdir, "api_retrying.txt",
                     wait_screen(t, s, lambda x: "Retrying" in x, 15, what="retrying").screen)
            except TimeoutError as e:
                print("no retry screen:", str(e)[:200])
            save(outdir, "api_error_429.txt",
                 wait_screen(t, s, lambda x: "Request rejected (429)" in x and is_ready(x), 30,
                             what="429 error").screen)

            # exit
            t.send_literal(s, "/exit")
            wait_screen(t, s, lambda x: "/exit" in x, 10, what="typed /exit")
            t.send_keys(s, "Enter")
            wait_until(lambda: t.pane_dead(s), 15, what="claude exited")
            save(outdir, "exit_resume.txt",
                 wait_screen(t, s, lambda x: RESUME_RE.search(x) is not None, 5, what="resume hint").screen)

            # ---------------- not pre-seeded: dialogs --------------------------------
            home2 = seed_home(tmp / "home2", [proj], preseed=False)
            d = "dlg"
            t.new_session(d, proj, [claude, "--model", "sonnet", "--dangerously-skip-permissions"],
                          claude_env(home2, api.base_url))
            seen: set[str] = set()
            for _ in range(4):
                w = wait_screen(
                    t, d,
                    lambda x: is_ready(x) or ("trust" not in seen and "trust this folder" in x)
                    or ("apikey" not in seen and "Detected a custom API key" in x)
                    or ("bypass" not in seen and "Bypass Permissions mode" in x),
                    30, what="dialog or ready")
                x = w.screen
                if is_ready(x):
                    break
                if "trust this folder" in x and "trust" not in seen:
                    seen.add("trust"); save(outdir, "dialog_trust.txt", x)
                    t.send_keys(d, "Enter")  # default: 1. Yes, I trust this folder
                elif "Detected a custom API key" in x and "apikey" not in seen:
                    seen.add("apikey"); save(outdir, "dialog_apikey.txt", x)
                    t.send_keys(d, "Up"); t.send_keys(d, "Enter")  # default is No -> choose Yes
                elif "Bypass Permissions mode" in x and "bypass" not in seen:
                    seen.add("bypass"); save(outdir, "dialog_bypass.txt", x)
                    t.send_keys(d, "Down"); t.send_keys(d, "Enter")  # default No, exit -> Yes, I accept
            print("dialogs seen:", sorted(seen))
        finally:
            t.kill_server()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
