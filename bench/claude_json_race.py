"""Do parallel starts of the real Claude Code CLI corrupt the shared ``~/.claude.json``? (issue 13, goal 4)

Usage: python bench/claude_json_race.py --version X [--agents 8] [--rounds 10] [--modes burst stagger]

One HOME, pre-seeded as in /work/shared/claude-code-under-test.md (onboarding done, API key approved, every
project trusted), is shared by every instance of every round. Per round K real CLIs run, each in its own project
dir and its own pane of one private tmux server (``tmux -L aqrace-<uuid>``, killed at the end), against the e2e
fake Messages API. Each instance gets one prompt; the fake answers with a Bash tool call (``echo``) and then a
text, so the CLI runs a tool and saves session/project state while the others do the same; then ``/exit``, which
writes the project's stats into ``.claude.json`` again.

Modes:
  burst    all K processes are released at one instant (they block on one FIFO; closing it wakes them all).
  stagger  start-ups serialised as under the dispatcher's host start-up lock: instance i+1 starts when i shows its
           ready prompt; the earlier ones are already working, so writes while working still overlap.

After every round ``.claude.json`` is checked: valid JSON, ``hasCompletedOnboarding``, ``customApiKeyResponses``
and every project's ``hasTrustDialogAccepted`` still there; new ``.claude.json.corrupted.*`` files under HOME are
counted, as are instances that showed a start-up dialog (onboarding, trust, API key, bypass: lost state), printed a
config error, or never became ready. A broken file is recorded and then re-seeded, so rounds stay independent.
Screens of abnormal instances go to the log dir (``--keep``). Needs tmux and the installed CLI
(tests/e2e/install_claude.sh); the machine may be loaded — that only widens the race windows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make tests.e2e importable

from tests.e2e import harness  # noqa: E402
from tests.e2e.fake_api import BashToolUse, FakeAnthropicAPI, Recorded, Response, Text  # noqa: E402

log = logging.getLogger("claude_json_race")

PROMPT_RE = re.compile(r"race prompt ([0-9a-f]{8})")
#: Screens that mean the instance did not see the pre-seeded state (onboarding, trust, API key, bypass).
LOST_STATE_MARKERS = (*harness.DIALOG_MARKERS, "Choose the text style", "Let's get started",
                      "Select login method", "WARNING: Claude Code running in Bypass")
#: A config read/write problem the CLI reports on screen.
CONFIG_ERROR_RE = re.compile(r"corrupted|Configuration error|Invalid JSON|restored from backup|"
                             r"Failed to (?:save|read|parse) config", re.I)
READY_TIMEOUT_S = 180.0   # 8 cold starts of a 250-400 MB binary on a loaded 2-core VM
TURN_TIMEOUT_S = 180.0
EXIT_TIMEOUT_S = 40.0


class RaceAPI(FakeAnthropicAPI):
    """The e2e fake, answering each instance by the tag in its prompt (no shared script to race on)."""

    def _choose(self, rec: Recorded) -> Response:
        with self._lock:
            follow_up = self._follow_up(rec)
            if follow_up is not None:
                return follow_up
            if rec.is_turn:
                m = PROMPT_RE.search(rec.last_user_text())
                if m and not rec.tool_results():
                    return BashToolUse(f"echo ran-{m.group(1)}", then=f"Finished {m.group(1)}.")
        return Text("OK.")


@dataclass
class Instance:
    idx: int
    tag: str
    project: Path
    name: str
    started: float = 0.0
    ready_after: float | None = None
    outcome: str = "pending"  # ok | dialog | config-error | not-ready | no-turn | no-exit
    notes: list[str] = field(default_factory=list)
    screen: str = ""
    ready_event: threading.Event = field(default_factory=threading.Event)


@dataclass
class RoundResult:
    mode: str
    round: int
    json_ok: bool
    keys_ok: bool
    missing: list[str]
    corrupted_files: int
    backup_files: int
    outcomes: dict[str, int]
    seconds: float
    writes_seen: int = 0
    torn_reads: int = 0
    missing_reads: int = 0

    @property
    def lost_state(self) -> int:
        return self.outcomes.get("dialog", 0)


# --------------------------------------------------------------------------- HOME and its checks

def seed(home: Path, projects: list[Path], version: str) -> None:
    harness.seed_home(home, projects, preseed=True, version=version)


def check_config(home: Path, projects: list[Path]) -> tuple[bool, bool, list[str]]:
    """(valid JSON, seeded keys present, what is missing)."""
    try:
        cfg = json.loads((home / ".claude.json").read_text())
    except (OSError, ValueError) as exc:
        return False, False, [f"unreadable: {exc}"]
    if not isinstance(cfg, dict):
        return False, False, ["not an object"]
    missing: list[str] = []
    if cfg.get("hasCompletedOnboarding") is not True:
        missing.append("hasCompletedOnboarding")
    approved = (cfg.get("customApiKeyResponses") or {}).get("approved") or []
    if harness.API_KEY[-20:] not in approved:
        missing.append("customApiKeyResponses")
    known = cfg.get("projects") or {}
    for p in projects:
        if not (known.get(str(p)) or {}).get("hasTrustDialogAccepted"):
            missing.append(f"trust:{p.name}")
    return True, not missing, missing


def config_files(home: Path, kind: str) -> set[Path]:
    """``.claude.json.<kind>.*`` files anywhere under HOME (2.1.x keeps backups in ~/.claude/backups)."""
    out: set[Path] = set()
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if d not in ("projects", "shell-snapshots", "todos", "statsig")]
        out.update(Path(root, f) for f in files if f".claude.json.{kind}." in f)
    return out


class Watcher:
    """Samples ``.claude.json`` while a round runs: how often it is replaced or rewritten, and whether a reader
    (as another instance starting at that moment) ever finds it missing, empty or not valid JSON."""

    def __init__(self, path: Path, interval: float = 0.02) -> None:
        self.path, self.interval = path, interval
        self.writes = 0
        self.replaced = 0  # writes that came with a new inode: temp file + rename, atomic for readers
        self.torn = 0
        self.missing = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: tuple[int, int, int] | None = None
        while not self._stop.wait(self.interval):
            self.samples += 1
            try:
                st = os.stat(self.path)
                data = self.path.read_bytes()
            except FileNotFoundError:
                self.missing += 1
                continue
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            if last is not None and sig != last:
                self.writes += 1
                self.replaced += sig[0] != last[0]
            last = sig
            try:
                json.loads(data)
            except ValueError:
                self.torn += 1


# --------------------------------------------------------------------------- one instance

class Race:
    def __init__(self, claude_bin: str, version: str, home: Path, projects: list[Path], api: RaceAPI,
                 socket: str, logdir: Path) -> None:
        self.bin, self.version, self.home, self.projects, self.api = claude_bin, version, home, projects, api
        self.tmux = harness.RawTmux(socket)
        self.logdir = logdir
        self.env = harness.claude_env(home, api.base_url)
        # tmux exits with its last session; a keeper stops the next round's new-session racing that exit.
        self.tmux.run("new-session", "-d", "-s", "keeper", "sleep", "86400")

    def spawn(self, inst: Instance, gate: Path | None) -> None:
        """New tmux session for ``inst``; with ``gate`` the CLI waits on that FIFO before it execs."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        argv = [self.bin, "--model", "sonnet", "--dangerously-skip-permissions"]
        cmd = f'exec env -i TMUX="$TMUX" TMUX_PANE="$TMUX_PANE" {exports} {shlex.join(argv)}'
        if gate is not None:
            armed = gate.parent / f"armed-{inst.idx}"
            cmd = f"touch {shlex.quote(str(armed))}; read -r _ < {shlex.quote(str(gate))}; {cmd}"
        self.tmux.run("new-session", "-d", "-s", inst.name, "-x", str(harness.WIDTH), "-y", str(harness.HEIGHT),
                      "-c", str(inst.project), "bash", "--norc", "--noprofile", "-c", cmd,
                      ";", "set-option", "-w", "-t", f"={inst.name}:", "remain-on-exit", "on")

    def capture(self, inst: Instance) -> str:
        try:
            return self.tmux.capture(inst.name)
        except RuntimeError as exc:
            return f"<capture failed: {exc}>"

    def _poll(self, inst: Instance, pred: Any, timeout: float) -> str | None:
        """Poll the pane until pred(screen); return the screen, or None on timeout / abnormal screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture(inst)
            inst.screen = screen
            if any(m in screen for m in LOST_STATE_MARKERS):
                inst.outcome = "dialog"
                return None
            if CONFIG_ERROR_RE.search(screen):
                inst.outcome = "config-error"
                return None
            if pred(screen):
                return screen
            if time.monotonic() > deadline:
                return None
            time.sleep(0.25)  # poll interval

    def drive(self, inst: Instance) -> None:
        """Ready → one prompt (tool call + answer) → /exit. Never answers a dialog: that would hide lost state."""
        try:
            self._drive(inst)
        except Exception as exc:  # noqa: BLE001 - a bench records, it does not stop on one instance
            inst.outcome = inst.outcome if inst.outcome != "pending" else "error"
            inst.notes.append(f"{type(exc).__name__}: {exc}")
        finally:
            inst.ready_event.set()
            if inst.outcome != "ok":
                (self.logdir / f"{inst.name}.screen.txt").write_text(inst.screen)

    def _drive(self, inst: Instance) -> None:
        if self._poll(inst, harness.is_ready, READY_TIMEOUT_S) is None:
            if inst.outcome == "pending":
                inst.outcome = "not-ready"
            return
        inst.ready_after = time.monotonic() - inst.started
        inst.ready_event.set()
        prompt = f"race prompt {inst.tag}: run echo"
        for _attempt in range(3):
            self.tmux.send_literal(inst.name, prompt)
            time.sleep(0.3)  # let the TUI take the text before Enter (known pitfall; confirmed below)
            self.tmux.send_keys(inst.name, "Enter")
            try:
                self.api.wait_for_request(lambda r: r.is_turn and inst.tag in r.last_user_text(), timeout=30)
                break
            except TimeoutError:
                inst.notes.append("prompt not seen by the API, retrying")
                self.tmux.send_keys(inst.name, "C-u")
        else:
            inst.outcome = "no-turn"
            return
        done = f"Finished {inst.tag}."
        if self._poll(inst, lambda s: done in s and harness.is_ready(s), TURN_TIMEOUT_S) is None:
            if inst.outcome == "pending":
                inst.outcome = "no-turn"
            return
        self.tmux.send_literal(inst.name, "/exit")
        if self._poll(inst, lambda s: "Exit the CLI" in s, 15) is None:
            if inst.outcome != "pending":
                return
            inst.notes.append("/exit menu not seen; pressing Enter anyway")
        self.tmux.send_keys(inst.name, "Enter")
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while not self.tmux.pane_dead(inst.name):
            if time.monotonic() > deadline:
                inst.outcome = "no-exit"
                inst.screen = self.capture(inst)
                return
            time.sleep(0.25)  # poll interval
        inst.screen = self.capture(inst)
        if CONFIG_ERROR_RE.search(inst.screen):
            inst.outcome = "config-error"
            return
        inst.outcome = "ok"

    # ----------------------------------------------------------------------- rounds

    def round(self, mode: str, rnd: int, sabotage: bool = False) -> RoundResult:
        t0 = time.monotonic()
        if sabotage:  # control: a truncated file as a torn write would leave it; the checks must notice
            cfg = self.home / ".claude.json"
            cfg.write_bytes(cfg.read_bytes()[: cfg.stat().st_size // 2])
        before = config_files(self.home, "corrupted")
        backups_before = config_files(self.home, "backup")
        watcher = Watcher(self.home / ".claude.json").__enter__()
        insts = [Instance(i, uuid.uuid4().hex[:8], p, f"r{rnd}-{mode[0]}{i}") for i, p in enumerate(self.projects)]
        threads = [threading.Thread(target=self.drive, args=(x,), name=x.name, daemon=True) for x in insts]
        if mode == "burst":
            gate_dir = Path(tempfile.mkdtemp(prefix="gate-", dir=self.logdir))
            gate = gate_dir / "go"
            os.mkfifo(gate)
            for x in insts:
                self.spawn(x, gate)
            harness.wait_until(lambda: all((gate_dir / f"armed-{x.idx}").exists() for x in insts), 60,
                               what="all panes waiting on the gate")
            # Readers blocked in open() wake when the writer opens; all see EOF when it closes: one instant.
            fd = os.open(gate, os.O_WRONLY)
            time.sleep(0.5)  # let every reader get from open() into read() before the close releases them all
            start = time.monotonic()
            os.close(fd)
            for x, t in zip(insts, threads):
                x.started = start
                t.start()
        else:
            for x, t in zip(insts, threads):
                x.started = time.monotonic()
                self.spawn(x, None)
                t.start()
                x.ready_event.wait(READY_TIMEOUT_S + 10)  # the lock is held until the prompt shows
        for t in threads:
            t.join(READY_TIMEOUT_S + TURN_TIMEOUT_S + EXIT_TIMEOUT_S + 60)
        for x in insts:
            self.tmux.run("kill-session", "-t", f"={x.name}", check=False)
        watcher.__exit__()
        json_ok, keys_ok, missing = check_config(self.home, self.projects)
        corrupted = len(config_files(self.home, "corrupted") - before)
        backups = len(config_files(self.home, "backup") - backups_before)
        outcomes: dict[str, int] = {}
        for x in insts:
            outcomes[x.outcome] = outcomes.get(x.outcome, 0) + 1
        ready = sorted(x.ready_after for x in insts if x.ready_after is not None)
        log.info("%s round %d: json_ok=%s keys_ok=%s missing=%s corrupted+%d backups+%d outcomes=%s "
                 "writes %d (new inode %d) torn %d gone %d/%d ready %s s (%.0f s)",
                 mode, rnd, json_ok, keys_ok, missing[:4], corrupted, backups, outcomes,
                 watcher.writes, watcher.replaced, watcher.torn, watcher.missing, watcher.samples,
                 f"{ready[0]:.1f}..{ready[-1]:.1f}" if ready else "-", time.monotonic() - t0)
        for x in insts:
            if x.outcome != "ok" or x.notes:
                log.info("   %s %s %s", x.name, x.outcome, "; ".join(x.notes))
        if not (json_ok and keys_ok):
            shutil.copy(self.home / ".claude.json", self.logdir / f"claude.json.{mode}.{rnd}") \
                if (self.home / ".claude.json").exists() else None
            seed(self.home, self.projects, self.version)  # next round starts from a good file again
        return RoundResult(mode, rnd, json_ok, keys_ok, missing, corrupted, backups, outcomes,
                           time.monotonic() - t0, watcher.writes, watcher.torn, watcher.missing)


def summarise(version: str, k: int, results: list[RoundResult]) -> str:
    lines = [f"claude {version}, K={k}",
             f"{'mode':<8} {'rounds':>6} {'bad json':>8} {'lost keys':>9} {'.corrupted':>10} "
             f"{'dialogs':>7} {'cfg err':>7} {'ok runs':>9} {'other':>6} {'writes/rnd':>10} {'torn rd':>7} "
             f"{'s/round':>7}"]
    for mode in dict.fromkeys(r.mode for r in results):
        rs = [r for r in results if r.mode == mode]
        total = lambda key, rs=rs: sum(r.outcomes.get(key, 0) for r in rs)  # noqa: E731
        ok = total("ok")
        other = sum(sum(r.outcomes.values()) for r in rs) - ok - total("dialog") - total("config-error")
        lines.append(f"{mode:<8} {len(rs):>6} {sum(not r.json_ok for r in rs):>8} "
                     f"{sum(r.json_ok and not r.keys_ok for r in rs):>9} {sum(r.corrupted_files for r in rs):>10} "
                     f"{total('dialog'):>7} {total('config-error'):>7} {ok:>4}/{k * len(rs):<4} {other:>6} "
                     f"{sum(r.writes_seen for r in rs) / len(rs):>10.1f} "
                     f"{sum(r.torn_reads + r.missing_reads for r in rs):>7} "
                     f"{sum(r.seconds for r in rs) / len(rs):>7.0f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=harness.CLAUDE_VERSION)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--modes", nargs="+", choices=("burst", "stagger"), default=["burst", "stagger"])
    parser.add_argument("--keep", type=Path, help="log dir to keep (screens of abnormal instances, bad files)")
    parser.add_argument("--json", type=Path, help="write per-round results here")
    parser.add_argument("--sabotage", action="store_true",
                        help="control run: truncate .claude.json before each round (the checks must fire)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if shutil.which("tmux") is None:
        parser.error("tmux not found")
    if not harness.VERSION_RE.match(args.version):
        parser.error(f"bad version {args.version!r}")
    claude_bin = harness.install_claude(args.version)
    root = Path(tempfile.mkdtemp(prefix="aqrace-"))
    logdir = args.keep or root / "log"
    logdir.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    projects = [root / f"project-{i}" for i in range(args.agents)]
    for p in projects:
        p.mkdir()
    seed(home, projects, args.version)
    socket = f"aqrace-{uuid.uuid4().hex[:12]}"
    results: list[RoundResult] = []
    api = RaceAPI()
    api.start()
    race = Race(claude_bin, args.version, home, projects, api, socket, logdir)
    log.info("claude %s, K=%d, HOME=%s, tmux -L %s, log %s", args.version, args.agents, home, socket, logdir)
    try:
        for rnd in range(1, args.rounds + 1):
            for mode in args.modes:  # interleaved: load drifts affect both modes alike
                results.append(race.round(mode, rnd, args.sabotage))
                if args.json:
                    args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    except KeyboardInterrupt:
        log.info("interrupted; summarising the rounds done")
    finally:
        race.tmux.kill_server()
        sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / socket
        sock.unlink(missing_ok=True)  # tmux 3.3a leaves the socket file behind
        api.stop()
    if results:
        print(summarise(args.version, args.agents, results))
    if args.keep is not None and (home / ".claude.json").exists():
        shutil.copy(home / ".claude.json", logdir / "claude.json.final")
    shutil.rmtree(root, ignore_errors=True)  # HOME holds transcripts and shell snapshots of every instance
    return 0


if __name__ == "__main__":
    sys.exit(main())
