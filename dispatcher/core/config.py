"""Configuration: frozen, typed settings and their validation from a parsed mapping.

Errors name the file, the key and the problem. Secrets come from the
environment (``REDIS_URL``, ``FLOWER_BASIC_AUTH``), never from the file alone:
:func:`from_mapping` takes the environment as a mapping. Finding and reading the
file, ``os.environ`` and the machine's name are the loader's (``store/config_file.py``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dispatcher.core import defaults as d
from dispatcher.core.errors import ConfigError

T = TypeVar("T")

_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9_-]+\Z")  # \Z: "$" would accept a trailing newline
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+\Z")
_GIT_REF = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]*\Z")


@dataclass(frozen=True)
class PoolSettings:
    """The autonomous tmux pool: ``prefix + i`` for i in start_index..start_index+max-1."""

    prefix: str = d.POOL_PREFIX
    start_index: int = d.POOL_START_INDEX
    max: int = d.POOL_MAX
    cooldown: float = d.POOL_COOLDOWN_S
    width: int = d.TMUX_WIDTH
    height: int = d.TMUX_HEIGHT

    def names(self) -> tuple[str, ...]:
        """Session names of the pool, in order."""
        return tuple(f"{self.prefix}{i}" for i in range(self.start_index, self.start_index + self.max))

    def contains(self, session: str) -> bool:
        """True when ``session`` is exactly one of the pool's names (never a dedicated session)."""
        return session in self.names()


@dataclass(frozen=True)
class TmuxSettings:
    """Which tmux server holds the pool (``tmux -L socket_name``)."""

    socket_name: str = d.TMUX_SOCKET


def host_name_from(machine_name: str) -> str:
    """A machine's name (``socket.gethostname()``) reduced to the characters a host name may hold."""
    raw = machine_name.split(".")[0] or "localhost"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def _this_machine() -> str:
    # Settings built in code (tests, benches) must name the same host as loaded ones, or their messages
    # go to a queue no worker of theirs consumes. platform.node() is uname's nodename, what gethostname()
    # returns on Linux, read without the network stack; the loader passes the name explicitly.
    return host_name_from(platform.node())


@dataclass(frozen=True)
class HostSettings:
    """This host of the fleet: its name (``AQ_HOST`` wins) and the Claude account its agents use."""

    name: str = field(default_factory=_this_machine)
    #: Usage limits pause every host of one account, and only those.
    account: str = d.ACCOUNT


@dataclass(frozen=True)
class AgentSettings:
    """How an agent is started and given its task."""

    command: str = d.AGENT_COMMAND
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(d.MODELS)))
    prompt_timeout: float = d.PROMPT_TIMEOUT_S
    submit_timeout: float = d.SUBMIT_TIMEOUT_S
    submit_retries: int = d.SUBMIT_RETRIES
    #: ``<session>-resume-id.txt`` files; None: ``<state_dir>/resume`` (filled in by Settings), so two
    #: deployments never resume each other's conversations. ``~/.claude-context`` is the reference layout.
    resume_dir: Path | None = None
    message_footer: str = d.MESSAGE_FOOTER
    #: Wire Claude Code hooks (``--settings``/``--session-id``) into each launch.
    hooks: bool = True
    #: Extra environment for the agent; ``$VAR``/``${VAR}`` expand from the dispatcher's at launch.
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: After a finished task: "exit" the agent and start a fresh one per task.
    recycle: str = "exit"
    #: Start agents that share a config dir one at a time (a lock per host and config dir). Parallel starts
    #: of Claude Code 2.1.197/2.1.332 never harmed ~/.claude.json here (bench/claude_json_race.py); false
    #: lets them start at once, for throughput on platforms and versions you have measured.
    startup_lock: bool = True
    #: Keep an agent booted in each free session (for the project and model the next tasks need), so a
    #: dispatch that fits it is a paste (docs/decisions.md "Pre-warmed agents"). Off until measured.
    prewarm: bool = False

    def model_for(self, priority: str) -> str:
        """Model name for a task priority (reference: critical → opus, else sonnet)."""
        return self.models.get(priority, self.models.get(d.DEFAULT_PRIORITY, "sonnet"))


@dataclass(frozen=True)
class LimitSettings:
    """How long the pool pauses on an API rate limit (429) or overload (529) that states no wait."""

    rate_limit_pause: float = d.RATE_LIMIT_PAUSE_S
    rate_limit_max_pause: float = d.RATE_LIMIT_MAX_PAUSE_S


@dataclass(frozen=True)
class FlowerSettings:
    """Flower monitoring: loopback by default, basic auth from FLOWER_BASIC_AUTH."""

    address: str = d.FLOWER_ADDRESS
    port: int = d.FLOWER_PORT
    basic_auth: str | None = None


@dataclass(frozen=True)
class WebSettings:
    """The fleet page (``dispatcher web``): loopback by default, basic auth always (see credentials.py)."""

    address: str = d.WEB_ADDRESS
    port: int = d.WEB_PORT


#: Events a human must act on: what notifications are sent for unless ``notify.events`` says otherwise.
NOTIFY_EVENTS: tuple[str, ...] = ("failed", "stuck", "waiting", "paused", "unpaused", "held", "fenced")


@dataclass(frozen=True)
class NotifySettings:
    """Run a command and/or POST a webhook on the events a human must act on (rate-limited per kind)."""

    command: str | None = None
    webhook: str | None = None
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = d.NOTIFY_TIMEOUT_S
    per_minute: int = d.NOTIFY_PER_MINUTE

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)


@dataclass(frozen=True)
class WorktreeSettings:
    """How an isolated project's worktrees are made and what happens to them on finish."""

    base: str | None = None  # branch/commit the worktree starts from; None: the project's HEAD
    merge_command: tuple[str, ...] | None = None  # argv run in the project dir after a task finished


@dataclass(frozen=True)
class ProjectSettings:
    """Per-project settings (``projects_config.<name>``)."""

    max_parallel: int | None = None  # None: the deployment's default for this isolation
    isolation: str = "none"  # none (one shared checkout) | worktree (one git worktree per task)
    worktree: WorktreeSettings = WorktreeSettings()


@dataclass(frozen=True)
class Settings:
    """All settings of one dispatcher deployment."""

    projects_dir: Path
    projects: tuple[str, ...] | None = None
    pool: PoolSettings = PoolSettings()
    tmux: TmuxSettings = TmuxSettings()
    agent: AgentSettings = AgentSettings()
    flower: FlowerSettings = FlowerSettings()
    host: HostSettings = field(default_factory=HostSettings)
    host_lost_after: float = d.HOST_LOST_AFTER_S
    limits: LimitSettings = LimitSettings()
    web: WebSettings = WebSettings()
    notify: NotifySettings = NotifySettings()
    scan_interval: float = d.SCAN_INTERVAL_S
    monitor_interval: float = d.MONITOR_INTERVAL_S
    blocked_timeout: float = d.BLOCKED_TIMEOUT_S
    finish_grace: float = d.FINISH_GRACE_S
    max_launch_attempts: int = d.MAX_LAUNCH_ATTEMPTS
    max_task_bytes: int = d.MAX_TASK_BYTES
    incomplete_grace: float = d.INCOMPLETE_GRACE_S
    settle_time: float = d.SETTLE_TIME_S
    #: Tasks of one project sharing a checkout that may run at once (per project: ``projects_config``).
    max_parallel: int = d.MAX_PARALLEL
    projects_config: Mapping[str, ProjectSettings] = field(default_factory=lambda: MappingProxyType({}))
    redis_url: str | None = None
    state_dir: Path = Path(d.STATE_DIR)
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.agent.resume_dir is None:  # per deployment, never a directory shared by every one on the host
            object.__setattr__(self, "agent", replace(self.agent, resume_dir=self.state_dir / d.RESUME_DIR))

    def project_settings(self, project: str) -> ProjectSettings:
        """The settings of one project (defaults when it has no ``projects_config`` entry)."""
        return self.projects_config.get(project) or ProjectSettings()

    def limit_for(self, project: str) -> int:
        """How many tasks of ``project`` may run at once; 0: no cap but the pool's size."""
        ps = self.project_settings(project)
        if ps.max_parallel is not None:
            return ps.max_parallel
        # A shared checkout gets the (safe) global cap; isolated worktrees do not step on each other.
        return 0 if ps.isolation == "worktree" else self.max_parallel

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (tests, CLI flags)."""
        return replace(self, **changes)


class _Reader:
    """Reads one mapping of the YAML file, turning every problem into a ConfigError."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.data = data
        self.where = where
        self.prefix = prefix
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: key '{self.prefix}{key}': {problem}")

    def get(self, key: str, kind: Callable[[Any], T], default: T, check: Callable[[T], str | None] | None = None) -> T:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        raw = self.data[key]
        try:
            value = kind(raw)
        except (TypeError, ValueError) as exc:
            raise self.fail(key, f"{exc} (got {raw!r})") from None
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(key, problem)
        return value

    def section(self, key: str) -> _Reader:
        self.seen.add(key)
        raw = self.data.get(key) or {}
        if not isinstance(raw, Mapping):
            raise self.fail(key, f"must be a mapping, got {type(raw).__name__}")
        return _Reader(raw, self.where, f"{self.prefix}{key}.")

    def unknown(self) -> list[str]:
        return [f"{self.prefix}{k}" for k in self.data if k not in self.seen]


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _strict_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("must be an integer")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("must be a number of seconds")
    return float(v)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("must be a string")
    return v


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def _str_map(v: Any) -> Mapping[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise TypeError("must be a mapping of strings to strings")
    return MappingProxyType(dict(v))


def _name_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and not _host_name(x) for x in v):
        raise TypeError("must be a list of project names matching [A-Za-z0-9._-]+")
    return tuple(v)


def _argv(v: Any) -> tuple[str, ...]:
    """A command as an argv list, or a string split like a shell would (never run by one)."""
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return tuple(v)
    return tuple(shlex.split(_argv_string(v)))


def _parallel(v: int | None) -> str | None:
    return None if v is not None and 1 <= v <= 500 else "must be between 1 and 500"


def _git_ref(v: str | None) -> str | None:
    ok = v is not None and _GIT_REF.match(v) and ".." not in v
    return None if ok else "must be a branch or commit name ([A-Za-z0-9._/-], not starting with - or /)"


def _projects_config(r: _Reader) -> tuple[Mapping[str, ProjectSettings], list[str]]:
    """``projects_config: {<project>: {max_parallel, isolation, worktree: {base, merge_command}}}``."""
    top = r.section("projects_config")
    out: dict[str, ProjectSettings] = {}
    extra: list[str] = []
    for name in list(top.data):
        if not isinstance(name, str) or _host_name(name):
            raise top.fail(str(name), "a project name must match [A-Za-z0-9._-]+")
        pr = top.section(name)
        wr = pr.section("worktree")
        out[name] = ProjectSettings(
            max_parallel=pr.get("max_parallel", _strict_int, None, _parallel),
            isolation=pr.get("isolation", _string, "none",
                             lambda v: None if v in ("none", "worktree") else "must be 'none' or 'worktree'"),
            worktree=WorktreeSettings(
                base=wr.get("base", _string, None, _git_ref),
                merge_command=wr.get("merge_command", _argv, None)),
        )
        extra += pr.unknown() + wr.unknown()
    return MappingProxyType(out), extra


def _host_name(v: str) -> str | None:
    return None if _SAFE_NAME.match(v) and v not in (".", "..") else "must match [A-Za-z0-9._-]+"


def _host_name_env(v: str) -> str:
    if _host_name(v):
        raise ConfigError(f"environment AQ_HOST={v!r}: a host name must match [A-Za-z0-9._-]+")
    return v


def _argv_string(v: Any) -> str:
    text = _string(v)
    try:
        if not shlex.split(text):
            raise ValueError("is empty")
    except ValueError as exc:
        raise ValueError(f"must be a command line (run without a shell): {exc}") from None
    return text


def _http_url(v: Any) -> str:
    text = _string(v).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return text


def _kind_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and re.fullmatch(r"[a-z][a-z-]{0,40}", x) for x in v):
        raise TypeError("must be a list of event kinds (failed, stuck, waiting, paused, unpaused, held, fenced…)")
    return tuple(v)


def _path(base: Path) -> Callable[[Any], Path]:
    def conv(v: Any) -> Path:
        p = Path(os.path.expanduser(_string(v)))
        return p if p.is_absolute() else (base / p)

    return conv


def _env_first(env: Mapping[str, str], var: str, file_value: Any, conv: Callable[[Any], Any] = str) -> Any:
    """The environment wins over the file; the file's key is still read (validated, not "unknown")."""
    return conv(env[var]) if env.get(var) else file_value


def from_mapping(data: Mapping[str, Any], *, base: Path, where: str, env: Mapping[str, str],
                 host_name: str | None = None) -> Settings:
    """Validate a parsed YAML mapping into Settings; relative paths are resolved against ``base``.

    ``env`` (the process environment, given) overrides some keys; ``host_name`` is the default
    ``host.name`` (None: this machine's).
    """
    r = _Reader(data, where)
    to_path = _path(base)
    pool_r = r.section("pool")
    pool = PoolSettings(
        prefix=pool_r.get("prefix", _string, d.POOL_PREFIX,
                          lambda v: None if _SAFE_PREFIX.match(v) else "must match [A-Za-z0-9_-]+"),
        start_index=pool_r.get("start_index", _strict_int, d.POOL_START_INDEX, _non_negative),
        max=pool_r.get("max", _strict_int, d.POOL_MAX, _parallel),
        cooldown=pool_r.get("cooldown", _number, d.POOL_COOLDOWN_S, _non_negative),
        width=pool_r.get("width", _strict_int, d.TMUX_WIDTH, lambda v: None if v >= 80 else "must be >= 80"),
        height=pool_r.get("height", _strict_int, d.TMUX_HEIGHT, lambda v: None if v >= 20 else "must be >= 20"),
    )
    tmux_r = r.section("tmux")
    socket_name = tmux_r.get("socket_name", _string, "",  # unset: derived from state_dir below
                             lambda v: None if _SAFE_NAME.match(v) else "must match [A-Za-z0-9._-]+")
    agent_r = r.section("agent")
    models: Mapping[str, str] = agent_r.get("models", _str_map, MappingProxyType(dict(d.MODELS)))
    unknown_prio = [k for k in models if k not in d.PRIORITIES]
    if unknown_prio:
        raise agent_r.fail("models", f"unknown priorities {unknown_prio}; use {list(d.PRIORITIES)}")
    models = MappingProxyType({**d.MODELS, **models})
    agent = AgentSettings(
        command=agent_r.get("command", _string, d.AGENT_COMMAND,
                            lambda v: None if "{model}" in v else "must contain {model}"),
        models=models,
        prompt_timeout=agent_r.get("prompt_timeout", _number, d.PROMPT_TIMEOUT_S, _positive),
        submit_timeout=agent_r.get("submit_timeout", _number, d.SUBMIT_TIMEOUT_S, _positive),
        submit_retries=agent_r.get("submit_retries", _strict_int, d.SUBMIT_RETRIES, _positive),
        resume_dir=agent_r.get("resume_dir", to_path, None),
        message_footer=agent_r.get("message_footer", _string, d.MESSAGE_FOOTER),
        hooks=agent_r.get("hooks", _boolean, True),
        startup_lock=agent_r.get("startup_lock", _boolean, True),
        prewarm=agent_r.get("prewarm", _boolean, False),
        env=agent_r.get("env", _str_map, MappingProxyType({})),
        recycle=agent_r.get("recycle", _string, "exit",
                            lambda v: None if v in ("exit", "keep") else "must be 'exit' or 'keep'"),
    )
    flower_r = r.section("flower")
    flower = FlowerSettings(
        address=flower_r.get("address", _string, d.FLOWER_ADDRESS),
        port=flower_r.get("port", _strict_int, d.FLOWER_PORT,
                          lambda v: None if 0 < v < 65536 else "must be a TCP port"),
        basic_auth=_env_first(env, "FLOWER_BASIC_AUTH", flower_r.get("basic_auth", _string, None)),
    )
    host_r = r.section("host")
    host = HostSettings(
        name=_env_first(env, "AQ_HOST", host_r.get("name", _string, host_name or _this_machine(), _host_name),
                        _host_name_env),
        account=host_r.get("account", _string, d.ACCOUNT,
                           lambda v: None if _SAFE_NAME.match(v) else "must match [A-Za-z0-9._-]+"),
    )
    limits_r = r.section("limits")
    base_pause = limits_r.get("rate_limit_pause", _number, d.RATE_LIMIT_PAUSE_S, _positive)
    limit_settings = LimitSettings(
        rate_limit_pause=base_pause,
        rate_limit_max_pause=limits_r.get(
            "rate_limit_max_pause", _number, max(d.RATE_LIMIT_MAX_PAUSE_S, base_pause),
            lambda v: None if v >= base_pause else f"must be >= limits.rate_limit_pause ({base_pause:g})"),
    )
    web_r = r.section("web")
    web = WebSettings(
        address=web_r.get("address", _string, d.WEB_ADDRESS),
        port=web_r.get("port", _strict_int, d.WEB_PORT, lambda v: None if 0 <= v < 65536 else "must be a TCP port"),
    )
    notify_r = r.section("notify")
    notify = NotifySettings(
        command=notify_r.get("command", _argv_string, None),
        webhook=notify_r.get("webhook", _http_url, None),
        events=notify_r.get("events", _kind_list, NOTIFY_EVENTS),
        timeout=notify_r.get("timeout", _number, d.NOTIFY_TIMEOUT_S,
                             lambda v: None if 0 < v <= 120 else "must be between 0 and 120 seconds"),
        per_minute=notify_r.get("per_minute", _strict_int, d.NOTIFY_PER_MINUTE, _positive),
    )
    projects_config, project_extra = _projects_config(r)
    settings = Settings(
        projects_dir=_env_first(env, "AQ_PROJECTS_DIR", r.get("projects_dir", to_path, base / "projects"), to_path),
        projects=r.get("projects", _name_list, None),
        pool=pool,
        agent=agent,
        flower=flower,
        host=host,
        host_lost_after=r.get("host_lost_after", _number, d.HOST_LOST_AFTER_S,
                              lambda v: None if v >= 3 else "must be >= 3 (seconds)"),
        limits=limit_settings,
        web=web,
        notify=notify,
        scan_interval=r.get("scan_interval", _number, d.SCAN_INTERVAL_S, _positive),
        monitor_interval=r.get("monitor_interval", _number, d.MONITOR_INTERVAL_S, _positive),
        blocked_timeout=r.get("blocked_timeout", _number, d.BLOCKED_TIMEOUT_S, _positive),
        finish_grace=r.get("finish_grace", _number, d.FINISH_GRACE_S, _non_negative),
        max_launch_attempts=r.get("max_launch_attempts", _strict_int, d.MAX_LAUNCH_ATTEMPTS, _positive),
        max_task_bytes=r.get("max_task_bytes", _strict_int, d.MAX_TASK_BYTES, _positive),
        incomplete_grace=r.get("incomplete_grace", _number, d.INCOMPLETE_GRACE_S, _non_negative),
        settle_time=r.get("settle_time", _number, d.SETTLE_TIME_S, _non_negative),
        max_parallel=r.get("max_parallel", _strict_int, d.MAX_PARALLEL,
                           lambda v: None if 1 <= v <= 500 else "must be between 1 and 500"),
        projects_config=projects_config,
        redis_url=_env_first(env, "REDIS_URL", r.get("redis_url", _string, None)),
        state_dir=_env_first(env, "AQ_STATE_DIR", r.get("state_dir", to_path, base / d.STATE_DIR), to_path),
    )
    extra = (r.unknown() + pool_r.unknown() + tmux_r.unknown() + agent_r.unknown() + flower_r.unknown()
             + host_r.unknown() + limits_r.unknown() + web_r.unknown() + notify_r.unknown() + project_extra)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; see README 'Configuration'")
    return replace(settings, tmux=TmuxSettings(socket_name=socket_name or default_socket(settings.state_dir)))


def default_socket(state_dir: Path) -> str:
    """tmux socket of a deployment that names none: one per state dir, so two deployments never share a pool."""
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{d.TMUX_SOCKET}-{digest[:8]}"


def no_config_error(cwd: Path | None = None, *, cli_option: bool = True) -> ConfigError:
    """Why a command that acts on a deployment refuses to run without a config file, and the fix."""
    here = cwd or Path.cwd()
    option = "pass -c/--config PATH, or " if cli_option else ""
    return ConfigError(
        f"no {d.CONFIG_FILE} in {here} and {d.CONFIG_ENV} is not set, so there is no telling which deployment "
        f"(and which Redis) to act on. cd into the deployment's directory (the one with its {d.CONFIG_FILE}), "
        f"or {option}set {d.CONFIG_ENV}=/path/to/{d.CONFIG_FILE}. "
        "No deployment yet? 'dispatcher init DIR' writes one.")
