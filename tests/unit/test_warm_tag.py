"""The warm tag and its fingerprint (agent/warm.py): what makes a pre-warmed agent fit a task's launch."""

from __future__ import annotations

from pathlib import Path

from dispatcher.agent.warm import WarmTag, fingerprint

ARGV = ["claude", "--model", "sonnet", "--dangerously-skip-permissions", "--session-id", "u-1"]
ENV = {"AQ_SESSION": "h/ccl-auto-0", "AQ_TASK": "proj:T1", "HOME": "/home/a"}


def test_tag_round_trips_and_refuses_garbage() -> None:
    tag = WarmTag("k" * 32, "0b2a1c3d-0000-4000-8000-000000000000", "proj", "sonnet", "1700000000000-0")
    assert WarmTag.decode(tag.encode()) == tag
    assert WarmTag.decode("") is None and WarmTag.decode("a b c") is None and WarmTag.decode("a b c d e f") is None


def test_fingerprint_leaves_the_task_out_and_sees_everything_else(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"hooks": {}}')
    base = fingerprint(ARGV, ENV, tmp_path, settings)
    assert fingerprint(ARGV, {**ENV, "AQ_TASK": ""}, tmp_path, settings) == base  # a warm agent has no task
    assert fingerprint([*ARGV[:2], "opus", *ARGV[3:]], ENV, tmp_path, settings) != base  # model
    assert fingerprint(ARGV, {**ENV, "HOME": "/home/b"}, tmp_path, settings) != base  # environment
    assert fingerprint(ARGV, ENV, tmp_path / "..", settings) != base  # cwd (the project)
    assert fingerprint([*ARGV[:4], "--resume", "u-0"], ENV, tmp_path, settings) != base  # a resume
    settings.write_text('{"hooks": {"Stop": []}}')
    assert fingerprint(ARGV, ENV, tmp_path, settings) != base  # the settings file's content
