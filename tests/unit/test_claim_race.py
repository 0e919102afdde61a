"""The claim protocol where renameat2 is missing (NFS answers EINVAL): link + unlink still lets one claimer win.

Real processes (fresh interpreters, not forks of this threaded test process) race on real files; the fallback
path is forced by switching off our renameat2 binding in the claimers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILES = 150
CLAIMERS = 4

CLAIMER = """
import json, os, sys, time
from pathlib import Path
from dispatcher.inbox import files as aq
from dispatcher.flows import claim as cl
from dispatcher.core.errors import ClaimError
inbox, use_renameat2, go = Path(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3])
if not use_renameat2:
    aq._RENAMEAT2 = None  # as on NFS: the link()+unlink() fallback
(go.parent / f"ready-{os.getpid()}").touch()  # imported: ready to race
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:  # start together
    time.sleep(0.001)
won = []
for i in range(int(sys.argv[4])):
    try:
        cl.claim(inbox / f"T{i}.md")
        won.append(f"T{i}")
    except ClaimError:
        pass
print(json.dumps(won))
"""


@pytest.mark.parametrize("use_renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_of_racing_claimers_exactly_one_wins_each_task(tmp_path: Path, use_renameat2: bool) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(FILES):
        (inbox / f"T{i}.md").write_text(f"task {i}\n")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(inbox), "1" if use_renameat2 else "0", str(go),
                               str(FILES)], stdout=subprocess.PIPE, text=True) for _ in range(CLAIMERS)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < CLAIMERS and time.monotonic() < deadline:
        time.sleep(0.01)  # every claimer imported before the start: they really race
    go.touch()
    wins = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = sorted(t for w in wins for t in w)
    assert claimed == sorted(f"T{i}" for i in range(FILES)), "every task claimed exactly once"
    assert sorted(p.name for p in inbox.iterdir()) == sorted(f"T{i}.md.launching" for i in range(FILES))
    assert all((inbox / f"T{i}.md.launching").read_text() == f"task {i}\n" for i in range(FILES))
