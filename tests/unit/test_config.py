"""Configuration: defaults, validation errors (file + key + problem), env overrides, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.config import LimitSettings, Settings
from dispatcher.core.errors import ConfigError
from dispatcher.store.config_file import find_config_path, load_config


def write_config(tmp_path: Path, text: str, name: str = "dispatcher.yaml") -> Path:
    path = tmp_path / "conf" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    return message


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    s = load_config(None, env={})

    assert s.projects_dir == tmp_path / "projects"
    assert s.projects is None and s.redis_url is None and s.source is None
    assert s.pool.names() == ("ccl-auto-0", "ccl-auto-1", "ccl-auto-2")
    assert s.pool.cooldown == d.POOL_COOLDOWN_S and s.scan_interval == d.SCAN_INTERVAL_S
    assert s.blocked_timeout == d.BLOCKED_TIMEOUT_S and s.max_task_bytes == d.MAX_TASK_BYTES
    assert s.agent.model_for("critical") == "opus" and s.agent.model_for("low") == "sonnet"
    assert s.agent.prewarm is False  # off until measured on the deployment's machine (bench/prewarm.py)
    assert s.tmux.socket_name.startswith(d.TMUX_SOCKET + "-") and s.flower.address == "127.0.0.1"


def test_empty_file_gives_defaults_relative_to_its_dir(tmp_path):
    path = write_config(tmp_path, "")

    s = load_config(path, env={})

    assert s.projects_dir == path.parent.resolve() / "projects"
    assert s.state_dir == path.parent.resolve() / d.STATE_DIR
    assert s.source == path.resolve()


def test_full_file_is_read_into_typed_settings(tmp_path):
    path = write_config(tmp_path, """
projects_dir: work
projects: [web, api]
pool: {prefix: agent-, start_index: 2, max: 2, cooldown: 1.5}
tmux: {socket_name: q}
agent:
  command: "claude --model {model}"
  models: {critical: opus-x}
  prompt_timeout: 5
  resume_dir: resume
scan_interval: 10
blocked_timeout: 99
redis_url: redis://file:6379/0
""")

    s = load_config(path, env={})

    base = path.parent.resolve()
    assert s.projects_dir == base / "work" and s.projects == ("web", "api")
    assert s.pool.names() == ("agent-2", "agent-3") and s.pool.cooldown == 1.5
    assert s.agent.model_for("critical") == "opus-x" and s.agent.model_for("high") == "sonnet"
    assert s.agent.resume_dir == base / "resume" and s.agent.prompt_timeout == 5.0
    assert (s.scan_interval, s.blocked_timeout, s.redis_url) == (10.0, 99.0, "redis://file:6379/0")


def test_rate_limit_pauses_are_read_with_their_defaults(tmp_path):
    assert load_config(write_config(tmp_path, "{}\n"), env={}).limits == LimitSettings(60.0, 1800.0)
    s = load_config(write_config(tmp_path, "limits: {rate_limit_pause: 30, rate_limit_max_pause: 600}\n"), env={})
    assert (s.limits.rate_limit_pause, s.limits.rate_limit_max_pause) == (30.0, 600.0)
    # A base above the default cap lifts the default cap with it.
    assert load_config(write_config(tmp_path, "limits: {rate_limit_pause: 3600}\n"), env={}).limits == \
        LimitSettings(3600.0, 3600.0)


def test_absolute_and_home_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config(tmp_path, f"projects_dir: {tmp_path / 'abs'}\nstate_dir: ~/state\n")

    s = load_config(path, env={})

    assert s.projects_dir == tmp_path / "abs"
    assert s.state_dir == tmp_path / "home" / "state"


@pytest.mark.parametrize("text,key,problem", [
    ("pool: {max: 0}", "pool.max", "between 1 and 500"),
    ("pool: {max: '3'}", "pool.max", "must be an integer"),
    ("pool: {max: true}", "pool.max", "must be an integer"),
    ("pool: {prefix: 'a b'}", "pool.prefix", "must match"),
    ("pool: {cooldown: -1}", "pool.cooldown", "must be >= 0"),
    ("pool: 7", "pool", "must be a mapping"),
    ("tmux: {socket_name: '../x'}", "tmux.socket_name", "must match"),
    ("agent: {command: 'claude'}", "agent.command", "must contain {model}"),
    ("agent: {models: {urgent: opus}}", "agent.models", "unknown priorities"),
    ("agent: {models: [opus]}", "agent.models", "mapping of strings"),
    ("agent: {recycle: sometimes}", "agent.recycle", "'exit' or 'keep'"),
    ("agent: {hooks: 'yes'}", "agent.hooks", "true or false"),
    ("agent: {startup_lock: 'no'}", "agent.startup_lock", "true or false"),
    ("agent: {prewarm: 'on'}", "agent.prewarm", "true or false"),
    ("scan_interval: 0", "scan_interval", "must be > 0"),
    ("scan_interval: soon", "scan_interval", "number of seconds"),
    ("projects: [web, '../etc']", "projects", "list of project names"),
    ("projects: web", "projects", "list of project names"),
    ("flower: {port: 70000}", "flower.port", "TCP port"),
    ("projects_dir: 42", "projects_dir", "must be a string"),
    ("limits: {rate_limit_pause: 0}", "limits.rate_limit_pause", "must be > 0"),
    ("limits: {rate_limit_pause: 120, rate_limit_max_pause: 60}", "limits.rate_limit_max_pause",
     "must be >= limits.rate_limit_pause (120)"),
    ("limits: {rate_limit_max_pause: soon}", "limits.rate_limit_max_pause", "number of seconds"),
    ("max_parallel: 0", "max_parallel", "between 1 and 500"),
    ("projects_config: {web: {max_parallel: two}}", "projects_config.web.max_parallel", "must be an integer"),
    ("projects_config: {web: {isolation: docker}}", "projects_config.web.isolation", "'none' or 'worktree'"),
    ("projects_config: {web: {worktree: {base: '-x'}}}", "projects_config.web.worktree.base", "branch or commit"),
    ("projects_config: {web: {worktree: {merge_command: ''}}}", "projects_config.web.worktree.merge_command",
     "command line"),
    ("projects_config: {'../x': {}}", "projects_config.../x", "project name"),
    ("projects_config: [web]", "projects_config", "must be a mapping"),
])
def test_each_validation_error_names_file_key_and_problem(tmp_path, text, key, problem):
    message = config_error(tmp_path, text + "\n")

    assert f"key '{key}'" in message
    assert problem in message


@pytest.mark.parametrize("text,unknown", [("scan_intervall: 5", "scan_intervall"),
                                          ("pool: {size: 3}", "pool.size"),
                                          ("agent: {modles: {}}", "agent.modles"),
                                          ("limits: {rate_limit: 5}", "limits.rate_limit"),
                                          ("projects_config: {web: {paralel: 2}}", "projects_config.web.paralel"),
                                          ("projects_config: {web: {worktree: {bsae: x}}}",
                                           "projects_config.web.worktree.bsae")])
def test_unknown_keys_are_refused(tmp_path, text, unknown):
    message = config_error(tmp_path, text + "\n")

    assert "unknown key(s)" in message and unknown in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    message = config_error(tmp_path, "pool:\n  max: 3\n bad: [\n")

    assert "line" in message and "invalid YAML" in message


def test_top_level_must_be_a_mapping(tmp_path):
    assert "top level must be a mapping" in config_error(tmp_path, "- a\n- b\n")


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_env_overrides_secrets_and_projects_dir(tmp_path):
    path = write_config(tmp_path, "redis_url: redis://file/0\nprojects_dir: from-file\n")

    s = load_config(path, env={"REDIS_URL": "redis://env:6380/1", "AQ_PROJECTS_DIR": str(tmp_path / "env-projects"),
                               "FLOWER_BASIC_AUTH": "u:p"})

    assert s.redis_url == "redis://env:6380/1"
    assert s.projects_dir == tmp_path / "env-projects"
    assert s.flower.basic_auth == "u:p"


def test_process_environment_is_used_by_default(tmp_path, monkeypatch):
    path = write_config(tmp_path, "")
    monkeypatch.setenv("REDIS_URL", "redis://from-process/2")

    assert load_config(path).redis_url == "redis://from-process/2"


def test_config_path_from_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None, env={}) is None

    (tmp_path / d.CONFIG_FILE).write_text("")
    assert find_config_path(None, env={}) == tmp_path / d.CONFIG_FILE
    assert find_config_path(None, env={d.CONFIG_ENV: "/x/y.yaml"}) == Path("/x/y.yaml")
    assert find_config_path("explicit.yaml", env={d.CONFIG_ENV: "/x/y.yaml"}) == Path("explicit.yaml")


def test_settings_are_frozen_and_overridable(tmp_path):
    s = Settings(projects_dir=tmp_path)

    with pytest.raises(AttributeError):
        s.scan_interval = 1  # type: ignore[misc]
    assert s.with_overrides(scan_interval=1.0).scan_interval == 1.0 and s.scan_interval == d.SCAN_INTERVAL_S


def test_pool_contains_only_its_own_names():
    s = Settings(projects_dir=Path("."))

    assert s.pool.contains("ccl-auto-0") and not s.pool.contains("ccl-auto-3")
    assert not s.pool.contains("ccl-auto-") and not s.pool.contains("main")


def test_example_config_written_by_init_is_valid(tmp_path):
    from dispatcher.cli.examples import CONFIG_TEMPLATE

    path = write_config(tmp_path, CONFIG_TEMPLATE)

    s = load_config(path, env={})

    assert s.projects_dir == path.parent.resolve() / "projects"
    assert s.pool.names() == ("ccl-auto-0", "ccl-auto-1", "ccl-auto-2")


def test_unreadable_yaml_scalar_is_a_config_error(tmp_path):
    message = config_error(tmp_path, "scan_interval: 2026-13-45\n")

    assert "put it in quotes" in message


def test_env_state_dir_override_and_empty_env_value_is_ignored(tmp_path):
    path = write_config(tmp_path, "state_dir: st\n")

    s = load_config(path, env={"AQ_STATE_DIR": str(tmp_path / "env-state"), "REDIS_URL": ""})

    assert s.state_dir == tmp_path / "env-state"
    assert s.redis_url is None


def test_default_tmux_socket_is_derived_from_the_state_dir(tmp_path):
    """Two deployments on one machine get their own tmux server by default; an explicit name is kept."""
    from dispatcher.cli.examples import CONFIG_TEMPLATE

    a = load_config(write_config(tmp_path / "a", CONFIG_TEMPLATE), env={})
    b = load_config(write_config(tmp_path / "b", CONFIG_TEMPLATE), env={})
    a_again = load_config(tmp_path / "a" / "conf" / "dispatcher.yaml", env={})
    moved = load_config(tmp_path / "a" / "conf" / "dispatcher.yaml", env={"AQ_STATE_DIR": str(tmp_path / "s")})
    explicit = load_config(write_config(tmp_path / "c", "tmux: {socket_name: q}\n"), env={})

    assert a.tmux.socket_name.startswith(d.TMUX_SOCKET + "-") and a.tmux.socket_name != b.tmux.socket_name
    assert a_again.tmux.socket_name == a.tmux.socket_name  # every process of one deployment finds the same server
    assert moved.tmux.socket_name not in (a.tmux.socket_name, b.tmux.socket_name)
    assert explicit.tmux.socket_name == "q"


def test_web_and_notify_sections(tmp_path):
    path = write_config(tmp_path, "web: {address: 0.0.0.0, port: 8080}\n"
                                  "notify:\n  command: notify-me --urgent\n  webhook: https://hooks.example/x\n"
                                  "  events: [failed, waiting]\n  per_minute: 2\n  timeout: 3\n")
    s = load_config(path, env={})
    assert (s.web.address, s.web.port) == ("0.0.0.0", 8080)
    assert s.notify.command == "notify-me --urgent" and s.notify.webhook == "https://hooks.example/x"
    assert s.notify.events == ("failed", "waiting") and s.notify.per_minute == 2 and s.notify.enabled
    assert not load_config(write_config(tmp_path, "{}\n"), env={}).notify.enabled


@pytest.mark.parametrize("text, key", [
    ("notify: {webhook: 'file:///etc/passwd'}", "notify.webhook"),
    ("notify: {webhook: 'javascript:alert(1)'}", "notify.webhook"),
    ("notify: {webhook: 'http://'}", "notify.webhook"),
    ("notify: {command: ''}", "notify.command"),
    ("notify: {command: 'unbalanced \"quote'}", "notify.command"),
    ("notify: {events: failed}", "notify.events"),
    ("notify: {events: ['Failed; rm']}", "notify.events"),
    ("notify: {per_minute: 0}", "notify.per_minute"),
    ("notify: {timeout: 600}", "notify.timeout"),
    ("web: {port: 70000}", "web.port"),
    ("notify: {shell: true}", "notify.shell"),
])
def test_notify_and_web_errors(tmp_path, text, key):
    assert key in config_error(tmp_path, text + "\n")


def test_max_parallel_is_one_per_shared_checkout_and_uncapped_per_worktree_project(tmp_path):
    s = load_config(write_config(tmp_path, (
        "projects_config:\n"
        "  web: {isolation: worktree, worktree: {base: main, merge_command: [git, merge, --ff-only]}}\n"
        "  api: {max_parallel: 2}\n"
        "  docs: {isolation: worktree, max_parallel: 3, worktree: {merge_command: 'git merge --no-edit'}}\n")), env={})

    assert s.max_parallel == d.MAX_PARALLEL == 1
    assert (s.limit_for("other"), s.limit_for("api"), s.limit_for("web"), s.limit_for("docs")) == (1, 2, 0, 3)
    assert s.project_settings("web").worktree.base == "main"
    assert s.project_settings("web").worktree.merge_command == ("git", "merge", "--ff-only")
    assert s.project_settings("docs").worktree.merge_command == ("git", "merge", "--no-edit")
    assert load_config(write_config(tmp_path, "max_parallel: 4\n"), env={}).limit_for("x") == 4
