"""The claim protocol where renameat2 is missing (NFS answers EINVAL): link + unlink still lets one claimer win.

Real processes race on real files; the fallback path is forced by switching off our renameat2 binding.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from dispatcher import agent_queue as aq
from dispatcher.errors import ClaimError

FILES = 150
CLAIMERS = 4


def _claim_all(inbox: str, use_renameat2: bool, start: "mp.synchronize.Barrier", out: "mp.Queue[list[str]]") -> None:
    if not use_renameat2:
        aq._RENAMEAT2 = None  # as on NFS: the link()+unlink() fallback
    won = []
    start.wait()
    for i in range(FILES):
        try:
            aq.claim(Path(inbox) / f"T{i}.md")
            won.append(f"T{i}")
        except ClaimError:
            pass
    out.put(won)


@pytest.mark.parametrize("use_renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_of_racing_claimers_exactly_one_wins_each_task(tmp_path: Path, use_renameat2: bool) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(FILES):
        (inbox / f"T{i}.md").write_text(f"task {i}\n")
    ctx = mp.get_context("fork")
    start = ctx.Barrier(CLAIMERS)
    out: "mp.Queue[list[str]]" = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(inbox), use_renameat2, start, out)) for _ in range(CLAIMERS)]
    for p in procs:
        p.start()
    wins = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = sorted(t for w in wins for t in w)
    assert claimed == sorted(f"T{i}" for i in range(FILES)), "every task claimed exactly once"
    assert sorted(p.name for p in inbox.iterdir()) == sorted(f"T{i}.md.launching" for i in range(FILES))
    assert all((inbox / f"T{i}.md.launching").read_text() == f"task {i}\n" for i in range(FILES))
