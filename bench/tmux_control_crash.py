"""Does this tmux's server survive control clients starting while others attach or leave?

    python bench/tmux_control_crash.py [--binary tmux] [--cycles 300] [--tries 3]

Why: tmux's server crashes (SIGSEGV at address 0x20, every session lost) when it writes a control-mode
notification to a control client that is still identifying: the client is flagged as a control client by its
first identify message, but its control state is set up only by the last one (tmux PR 4980, 2026; seen on
3.3a and 3.5a). The identify is read in several turns of the server's loop (the messages that pass stdin and
stdout descriptors each end a read), and a notification queued meanwhile (another control client attached or
left, a session made or killed) is written to every control client. The dispatcher's control clients
(``AQ_TMUX_CONTROL=1``) start in every worker process, so workers starting together, or a client starting
while a pool session is made, can kill every agent. This script runs the two patterns on a private socket and
says whether the server survived; ``AQ_TMUX_CONTROL`` should stay off for a tmux that does not.

- two-clients: two processes each start a control client (attach, one command, end of input) over and over.
- sessions: one process starts control clients over and over; another makes and kills a session over and over.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid


def _control_cycle(binary: str, socket: str) -> None:
    proc = subprocess.Popen([binary, "-u", "-N", "-L", socket, "-C", "attach-session", "-f", "no-output,ignore-size",
                             "-t", "=s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"display-message -p sync\n")
    proc.stdin.close()
    while os.read(proc.stdout.fileno(), 65536):
        pass
    proc.wait(timeout=10)
    proc.stdout.close()


def _session_cycle(binary: str, socket: str, i: int) -> None:
    subprocess.run([binary, "-L", socket, "new-session", "-d", "-s", f"x{i}", ";", "kill-session", "-t", f"=x{i}"],
                   capture_output=True, timeout=10, check=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def survives(binary: str, pattern: str, cycles: int) -> bool:
    """True when the server on a fresh private socket outlives ``cycles`` rounds of ``pattern``."""
    socket = f"aq-ctlcrash-{uuid.uuid4().hex[:8]}"
    subprocess.run([binary, "-L", socket, "new-session", "-d", "-s", "s", "-x", "80", "-y", "10"], check=True,
                   timeout=10)
    pid = int(subprocess.run([binary, "-L", socket, "display-message", "-p", "#{pid}"], capture_output=True,
                             text=True, check=True, timeout=10).stdout)
    children = []
    for k in range(2):
        child = os.fork()
        if child == 0:
            try:
                for i in range(cycles):
                    if not _alive(pid):
                        break
                    if pattern == "sessions" and k == 1:
                        _session_cycle(binary, socket, i)
                    else:
                        _control_cycle(binary, socket)
            except Exception:  # noqa: BLE001 - a lost server fails the next client: the parent judges
                pass
            finally:
                os._exit(0)
        children.append(child)
    for child in children:
        os.waitpid(child, 0)
    alive = _alive(pid)
    subprocess.run([binary, "-L", socket, "kill-server"], capture_output=True, timeout=10, check=False)
    return alive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="tmux")
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    version = subprocess.run([args.binary, "-V"], capture_output=True, text=True, check=False).stdout.strip()
    crashed = 0
    for pattern in ("two-clients", "sessions"):
        for _ in range(args.tries):
            ok = survives(args.binary, pattern, args.cycles)
            crashed += not ok
            print(f"{version}: {pattern:12} {'survived' if ok else 'SERVER CRASHED'} ({args.cycles} cycles)")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
