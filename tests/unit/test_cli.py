"""CLI: init, validate, submit, scan --dry-run, graph (click's CliRunner, plus one real subprocess run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatcher.cli.main import EXIT_CONFIG, EXIT_INVALID, cli
from dispatcher.core import defaults as d
from dispatcher.core.taskfile import DepRef, Priority
from dispatcher.inbox.reader import load_task


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config(tmp_path: Path, projects_dir: Path) -> Path:
    path = tmp_path / "dispatcher.yaml"
    # settle_time 0: the files these tests write are complete at once (settling: test_settle.py).
    path.write_text(f"projects_dir: {projects_dir}\nsettle_time: 0\n", encoding="utf-8")
    return path


def run(runner: CliRunner, config: Path, *args: str, input: str | None = None):
    return runner.invoke(cli, ["--config", str(config), *args], input=input, catch_exceptions=False)


# --- help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["init"], ["validate"], ["submit"], ["scan"], ["graph"]])
def test_every_command_has_help(runner, command):
    result = runner.invoke(cli, [*command, "--help"])

    assert result.exit_code == 0 and "Usage:" in result.output


# --- init ---------------------------------------------------------------------------------------------


def test_init_writes_config_and_example_project(runner, tmp_path):
    result = runner.invoke(cli, ["init", str(tmp_path / "here")])

    assert result.exit_code == 0, result.output
    inbox = tmp_path / "here" / "projects" / "example" / d.QUEUE_DIR / d.INBOX
    assert sorted(p.name for p in inbox.iterdir()) == ["DOC-3.md", "FEAT-2.md", "HOTFIX-0.md", "SETUP-1.md"]
    assert (tmp_path / "here" / "projects" / "example" / d.QUEUE_DIR / d.DONE).is_dir()
    assert f"wrote {tmp_path / 'here' / 'dispatcher.yaml'}" in result.output


def test_init_refuses_to_overwrite_without_force(runner, tmp_path):
    runner.invoke(cli, ["init", str(tmp_path)])
    (tmp_path / "dispatcher.yaml").write_text("# mine\n")

    refused = runner.invoke(cli, ["init", str(tmp_path)])
    assert refused.exit_code != 0 and "--force" in refused.output
    assert (tmp_path / "dispatcher.yaml").read_text() == "# mine\n"

    forced = runner.invoke(cli, ["init", "--force", str(tmp_path)])
    assert forced.exit_code == 0 and (tmp_path / "dispatcher.yaml").read_text() != "# mine\n"


@pytest.mark.timeout(60)
def test_real_init_then_scan_dry_run_shows_the_example_order(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPATCHER_CONFIG", "AQ_PROJECTS_DIR", "REDIS_URL")}
    exe = Path(sys.executable).with_name("dispatcher")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from dispatcher.cli.main import main; main()"]

    init = subprocess.run([*cmd, "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert init.returncode == 0, init.stderr
    scan = subprocess.run([*cmd, "scan", "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30)
    assert scan.returncode == 0, scan.stderr

    out = scan.stdout
    assert "Eligible, in dispatch order (1):" in out and "1. example:HOTFIX-0 [critical]" in out
    # One shared checkout: max_parallel 1 (the default) lets the next one wait for it.
    assert "example:SETUP-1 [high]  Create the project skeleton  — project at its limit (1/1)" in out
    blocked = out[out.index("Blocked (2):"):]
    assert "example:FEAT-2 [default]" in blocked and "waiting on example:SETUP-1" in blocked
    assert "example:DOC-3 [low]" in blocked and "waiting on example:FEAT-2" in blocked
    inbox = tmp_path / "projects" / "example" / d.QUEUE_DIR / d.INBOX
    assert not any(p.name.endswith((d.BLOCKED, d.INVALID)) for p in inbox.iterdir())  # dry run


# --- validate -----------------------------------------------------------------------------------------


def test_validate_ok_file_exits_zero_with_details(runner, config, make_project):
    proj = make_project("web", tasks={"T1": "---\npriority: critical\ndepends_on: [T0]\nowner: me\n---\nx\n"})

    result = run(runner, config, "validate", str(proj.inbox / "T1.md"))

    assert result.exit_code == 0
    assert "ok" in result.output and "web:T1 priority=critical model=opus depends_on=web:T0" in result.output
    assert "warning: unknown key 'owner' ignored" in result.output


def test_validate_invalid_files_exit_3_with_reasons(runner, config, make_project):
    proj = make_project("web", tasks={"ok": "fine", "tabs": "---\ntitle: x\n\tpriority: high\n---\n",
                                      "prio": "---\npriority: soon\n---\n"})
    paths = [str(proj.inbox / f"{n}.md") for n in ("ok", "tabs", "prio")]

    result = run(runner, config, "validate", *paths, str(proj.inbox / "missing.md"))

    assert result.exit_code == EXIT_INVALID
    lines = result.output.splitlines()
    assert lines[0].startswith("ok")
    assert "INVALID" in lines[1] and "tabs" in lines[1] and "(line 3)" in lines[1]
    assert "INVALID" in lines[2] and "unknown priority 'soon'" in lines[2]
    assert "INVALID" in lines[3] and "cannot open" in lines[3]


def test_validate_bad_config_exits_4(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pool: {max: 0}\n")
    (tmp_path / "T1.md").write_text("x")

    result = runner.invoke(cli, ["--config", str(bad), "validate", str(tmp_path / "T1.md")])

    assert result.exit_code == EXIT_CONFIG and "pool.max" in result.output


# --- submit -------------------------------------------------------------------------------------------


def test_submit_writes_a_task_that_parses_back(runner, config, projects_dir):
    result = run(runner, config, "submit", "web", "--id", "T5", "--title", "Fix it", "--priority", "HIGH",
                 "--depends-on", "api:A1", "--depends-on", "T4", "--tag", "bug", input="Please fix.\n")

    assert result.exit_code == 0, result.output
    path = projects_dir / "web" / d.QUEUE_DIR / d.INBOX / "T5.md"
    assert result.output.strip() == str(path)
    task = load_task(path, "web")
    assert (task.title, task.priority, task.tags, task.body) == ("Fix it", Priority.HIGH, ("bug",), "Please fix.")
    assert task.depends_on == (DepRef("api", "A1"), DepRef("web", "T4"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["T5.md"]  # no temp file left


def test_submit_body_from_a_file(runner, config, projects_dir, tmp_path):
    body = tmp_path / "body.md"
    body.write_text("from a file\n")

    result = run(runner, config, "submit", "web", str(body), "--id", "T6")

    assert result.exit_code == 0
    assert load_task(projects_dir / "web" / d.QUEUE_DIR / d.INBOX / "T6.md", "web").body == "from a file"


def test_submit_without_id_makes_unique_ids_in_a_burst(runner, config, projects_dir):
    """Scripts submit in loops: generated IDs never collide, even within one second."""
    paths = []
    for i in range(6):
        result = run(runner, config, "submit", "web", input=f"task {i}\n")
        assert result.exit_code == 0, result.output
        paths.append(Path(result.output.strip()))

    assert len(set(paths)) == 6
    assert sorted(load_task(p, "web").body for p in paths) == [f"task {i}" for i in range(6)]


@pytest.mark.parametrize("existing", ["", d.LAUNCHING, d.DISPATCHED, d.FAILED])
def test_submit_refuses_an_existing_id(runner, config, make_project, existing):
    proj = make_project("web")
    taken = proj.task_path("T1", existing)
    taken.write_text("original")

    result = run(runner, config, "submit", "web", "--id", "T1", input="new")

    assert result.exit_code != 0 and "already exists" in result.output
    assert taken.read_text() == "original"
    assert sorted(p.name for p in proj.inbox.iterdir()) == [taken.name]


@pytest.mark.parametrize("args,needle", [
    (["../etc", "--id", "T1"], "not allowed"),
    (["web", "--id", "../T1"], "not allowed"),
    (["web", "--id", "T1", "--depends-on", "../../etc:passwd"], "not allowed"),
])
def test_submit_refuses_unsafe_names_and_leaves_nothing(runner, config, projects_dir, args, needle):
    result = run(runner, config, "submit", *args, input="x")

    assert result.exit_code != 0 and needle in result.output
    leftovers = [p for p in projects_dir.rglob("*") if p.is_file()]
    assert leftovers == []


def test_submit_without_id_gets_a_timestamped_one(runner, config, projects_dir):
    result = run(runner, config, "submit", "web", input="x")

    assert result.exit_code == 0
    assert Path(result.output.strip()).name.startswith("T20")


# --- scan --dry-run and graph -------------------------------------------------------------------------


def test_scan_dry_run_prints_order_and_reasons_and_changes_nothing(runner, config, make_project):
    proj = make_project("web", tasks={"A": {"priority": "low"}, "B": {"priority": "critical"},
                                      "C": {"depends_on": ("A",)}, "BAD": "---\npriority: x\n---\n"})
    before = sorted(p.name for p in proj.inbox.iterdir())

    result = run(runner, config, "scan", "--dry-run")

    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("1. web:B [critical]") < out.index("web:A [low]  — project at its limit (1/1)")
    assert "web:C [default]  — waiting on web:A" in out
    assert "web/BAD.md  — unknown priority 'x'" in out
    assert sorted(p.name for p in proj.inbox.iterdir()) == before


def test_scan_dry_run_json(runner, config, make_project):
    import json

    make_project("web", tasks={"A": {}})

    result = run(runner, config, "scan", "--dry-run", "--json")

    data = json.loads(result.output)
    assert [x["id"] for x in data["eligible"]] == ["A"] and data["counts"]["web"]["pending"] == 1


def test_graph_highlights_a_cycle(runner, config, make_project):
    make_project("a", tasks={"X": {"depends_on": ("b:Y",)}})
    make_project("b", tasks={"Y": {"depends_on": ("a:X",)}, "Z": {}})

    result = run(runner, config, "graph")

    assert result.exit_code == 0
    assert "CYCLES:" in result.output and "!! a:X → b:Y → a:X" in result.output
    assert "b:Z  [ready]" in result.output


def test_graph_formats_dot_mermaid_json(runner, config, make_project):
    import json

    make_project("a", tasks={"X": {"depends_on": ("b:Y",)}, "W": {"depends_on": ("a:GONE",)}})
    make_project("b", tasks={"Y": {"depends_on": ("a:X",)}, "Z": {"depends_on": ("a:W",)}})

    dot = run(runner, config, "graph", "--format", "dot").output
    assert dot.startswith("digraph tasks {") and dot.rstrip().endswith("}")
    assert dot.count("[color=red, penwidth=2]") == 2  # the two edges of the cycle
    assert 'label="a:GONE\\nmissing"' in dot and "fillcolor=orange" in dot
    mermaid = run(runner, config, "graph", "--format", "mermaid").output
    assert mermaid.startswith("flowchart LR") and mermaid.count("stroke:red") == 2
    assert ":::missing" in mermaid and '["a:W (blocked)"]' in mermaid
    data = json.loads(run(runner, config, "graph", "--format", "json").output)
    assert data["cycles"] == ["a:X → b:Y → a:X"]
    states = {n["key"]: (n["state"], n["cycle"]) for n in data["nodes"]}
    assert states == {"a:X": ("blocked", True), "b:Y": ("blocked", True), "a:W": ("blocked", False),
                      "b:Z": ("blocked", False), "a:GONE": ("missing", False)}
    svg = run(runner, config, "graph", "--format", "svg").output
    assert svg.startswith("<svg") and svg.count('class="edge cycle"') == 2
    assert run(runner, config, "graph", "--format", "png").exit_code != 0
