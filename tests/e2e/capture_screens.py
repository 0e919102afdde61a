"""Capture real Claude Code screens into tests/fixtures/claude_screens/.

Run:  python -m tests.e2e.capture_screens [--version V|latest] [--states a,b] [outdir]
Needs tmux and npm (installs the CLI via install_claude.sh).  Files are named
``<state>_v<version>.txt``; the unsuffixed files in that folder are the original
v2.1.197 captures (see its README).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.e2e.fake_api import Error429, FakeAnthropicAPI, Overloaded529, Text
from tests.e2e.harness import (
    CLAUDE_VERSION,
    RESUME_RE,
    RawTmux,
    choose,
    claude_env,
    install_claude,
    is_busy,
    is_ready,
    latest_version,
    seed_home,
    wait_screen,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "claude_screens"
STATES = ("ready", "busy", "queued", "finished", "pasted", "api_retrying", "api_error_429", "api_error_529",
          "exit_resume", "dialog_trust", "dialog_apikey", "dialog_bypass")

BODY_30 = "\n".join(
    f"line {i:02d}: \"quoted\" 'single' `tick` $(echo pwned) \t tab → ✓ é 中文" for i in range(1, 31)
)
# (dialog marker, option that accepts it)
DIALOGS = (
    ("dialog_trust", "trust this folder", "Yes, I trust this folder"),
    ("dialog_apikey", "Detected a custom API key", "Yes"),
    ("dialog_bypass", "Bypass Permissions mode", "Yes, I accept"),
)


class Saver:
    def __init__(self, outdir: Path, version: str, states: set[str]) -> None:
        self.outdir, self.version, self.states = outdir, version, states

    def __call__(self, state: str, screen: str) -> None:
        if state not in self.states:
            return
        name = f"{state}_v{self.version}.txt"
        (self.outdir / name).write_text(screen, encoding="utf-8")
        print(f"saved {name}")


def main(outdir: Path, version: str, states: set[str]) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    claude = install_claude(version)
    save = Saver(outdir, version, states)
    tmp = Path(tempfile.mkdtemp(prefix="aq-capture-"))
    proj = tmp / "proj"
    proj.mkdir()
    argv = [claude, "--model", "sonnet", "--dangerously-skip-permissions"]
    with FakeAnthropicAPI() as api:
        t = RawTmux()
        try:
            # ---------------- pre-seeded session -------------------------------------
            home = seed_home(tmp / "home", [proj], version=version)
            s = "cap"
            t.new_session(s, proj, argv, claude_env(home, api.base_url))
            save("ready", wait_screen(t, s, is_ready, 30, what="ready").screen)

            # busy: hold the reply until we have the screen
            api.script(Text("Hello from the fake model.", gate=api.gate))
            t.paste(s, "Say hello")
            wait_screen(t, s, lambda x: "Say hello" in x, 10, what="typed text")
            t.send_keys(s, "Enter")
            save("busy", wait_screen(t, s, is_busy, 20, what="busy").screen)

            # queued: submit another message while busy
            t.paste(s, "A queued follow-up")
            wait_screen(t, s, lambda x: "A queued follow-up" in x, 10, what="typed follow-up")
            t.send_keys(s, "Enter")
            save("queued", wait_screen(t, s, lambda x: "queued messages" in x, 10, what="queued").screen)
            api.release()
            save("finished",
                 wait_screen(t, s, lambda x: is_ready(x) and "Hello from the fake model." in x
                             and api.pending == 0 and "queued messages" not in x
                             and x.count("OK.") >= 1, 30, what="finished").screen)
            api.gate.clear()

            # pasted: 30-line paste placeholder before Enter
            t.paste(s, BODY_30)
            save("pasted", wait_screen(t, s, lambda x: "[Pasted text" in x, 10, what="paste placeholder").screen)
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
                save("api_retrying",
                     wait_screen(t, s, lambda x: "etrying in" in x, 15, what="retrying").screen)
            except TimeoutError as e:
                print("no retry screen:", str(e)[:200])
            save("api_error_429",
                 wait_screen(t, s, lambda x: "Request rejected (429)" in x and is_ready(x), 30,
                             what="429 error").screen)

            # exit
            t.send_literal(s, "/exit")
            wait_screen(t, s, lambda x: "Exit the CLI" in x, 10, what="/exit menu")
            t.send_keys(s, "Enter")
            wait_until(lambda: t.pane_dead(s), 15, what="claude exited")
            save("exit_resume",
                 wait_screen(t, s, lambda x: RESUME_RE.search(x) is not None, 5, what="resume hint").screen)

            # ---------------- 529 overloaded, final (2.1.197 retries even with x-should-retry: false) ----
            o = "ovl"
            t.new_session(o, proj, argv, claude_env(home, api.base_url, {"CLAUDE_CODE_MAX_RETRIES": "1"}))
            wait_screen(t, o, is_ready, 30, what="ready")
            api.script(Overloaded529(times=2, should_retry=False))
            t.paste(o, "Trigger an overload")
            wait_screen(t, o, lambda x: "Trigger an overload" in x, 10, what="typed")
            t.send_keys(o, "Enter")
            save("api_error_529",
                 wait_screen(t, o, lambda x: "529" in x and is_ready(x), 30, what="529 error").screen)

            # ---------------- not pre-seeded: dialogs --------------------------------
            home2 = seed_home(tmp / "home2", [proj], preseed=False, version=version)
            d = "dlg"
            t.new_session(d, proj, argv, claude_env(home2, api.base_url))
            seen: set[str] = set()
            while True:
                x = wait_screen(
                    t, d, lambda x: is_ready(x) or any(m in x and st not in seen for st, m, _ in DIALOGS),
                    30, what="dialog or ready").screen
                if is_ready(x):
                    break
                st, _, accept = next((st, m, a) for st, m, a in DIALOGS if m in x and st not in seen)
                seen.add(st)
                save(st, x)
                choose(t, d, accept)
                t.send_keys(d, "Enter")
            print("dialogs seen:", sorted(seen))
        finally:
            t.kill_server()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", type=Path, default=OUT)
    ap.add_argument("--version", default=CLAUDE_VERSION, help="a version, or 'latest' (asks npm)")
    ap.add_argument("--states", default=",".join(STATES), help="comma-separated subset of: " + ",".join(STATES))
    a = ap.parse_args()
    wanted = {x for x in a.states.split(",") if x}
    if wanted - set(STATES):
        ap.error(f"unknown states: {sorted(wanted - set(STATES))}")
    main(a.outdir, latest_version() if a.version == "latest" else a.version, wanted)
