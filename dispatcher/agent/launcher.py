"""Start an agent in a pool session and deliver one task to it (design §6).

Start-up: argv from the command template, started with ``respawn-pane -c DIR``
(no shell), serialised per host by the startup lock until the real prompt
shows. Delivery: bracketed paste from a private buffer, Enter as a separate
key, confirmed by the UserPromptSubmit hook carrying the task's tag (or, with
hooks off, by the screen); Enter alone is retried, bounded.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import uuid4

import redis as redis_lib

from dispatcher.agent import warm as warm_tag
from dispatcher.agent.hook_settings import settings_path, write_settings
from dispatcher.agent.pane_output import PaneOutput
from dispatcher.agent.tmux import Tmux
from dispatcher.agent.warm import WarmTag
from dispatcher.core import keys, screen
from dispatcher.core.config import AgentSettings
from dispatcher.core.defaults import (
    FAST_POLL_FOR_S,
    FAST_POLL_S,
    PASTE_SHOW_S,
    POLL_INTERVAL_S,
    SILENT_PANE_LOOK_S,
    STARTUP_LOCK_TTL_S,
)
from dispatcher.core.errors import (
    ConfigError,
    DialogError,
    LaunchError,
    PromptTimeout,
    SessionError,
    SubmitError,
    TmuxError,
)
from dispatcher.core.message import build_message, delivery_tag
from dispatcher.store.hook_log import HookLog, HookReport
from dispatcher.store.locks import Held

logger = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MODEL = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")


@dataclass(frozen=True)
class LaunchRequest:
    """One task to deliver to one agent."""

    project_dir: Path
    project: str
    task_id: str
    body: str
    priority: str = "default"
    #: The project's queue as the agent should name it: relative to its cwd, or absolute from a worktree.
    queue_dir: str = ".agent-queue"
    #: Claude session UUID we choose (``--session-id``); ignored when resuming.
    session_uuid: str = field(default_factory=lambda: str(uuid4()))


@dataclass(frozen=True)
class LaunchResult:
    """What was started and how delivery was confirmed."""

    session: str
    agent_uuid: str
    resumed: bool
    model: str
    argv: tuple[str, ...]
    tag: str
    confirmed_by: str  # "hook" or "screen"
    enter_presses: int
    ready_after: float  # seconds from start to a ready prompt
    submit_after: float  # seconds from a ready prompt to confirmed submission
    hook_id: str | None = None
    warm: bool = False  # a pre-warmed agent took the task (no start)


def resume_path(agent: AgentSettings, session: str) -> Path:
    """File holding the Claude session UUID to resume in ``session`` (reference layout)."""
    if agent.resume_dir is None:  # an AgentSettings used outside Settings, which fills it in
        raise ConfigError("agent.resume_dir is not set")
    return Path(agent.resume_dir).expanduser() / f"{session}-resume-id.txt"


def read_resume_id(agent: AgentSettings, session: str) -> str | None:
    """The UUID to resume, or None; a malformed file is ignored (and left for an operator)."""
    path = resume_path(agent, session)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("cannot read resume file %s: %s", path, exc)
        return None
    if not _UUID.match(value):
        logger.warning("resume file %s does not hold a session UUID; starting fresh", path)
        return None
    return value


def build_argv(command: str, *, model: str, resume_id: str | None = None, settings_file: Path | None = None,
               session_uuid: str | None = None) -> list[str]:
    """argv from the template: ``{model}`` filled, ``{resume}`` → ``--resume <id>`` or dropped."""
    if not _MODEL.match(model):
        raise LaunchError(f"model name {model!r} is not safe to pass as an argument")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise LaunchError(f"agent command template cannot be parsed: {exc}") from None
    argv: list[str] = []
    for word in words:
        if word == "{resume}":
            argv += ["--resume", resume_id] if resume_id else []
        elif "{resume}" in word:
            raise LaunchError("'{resume}' must be a word of its own in the agent command template")
        else:
            argv.append(word.replace("{model}", model))
    if not argv:
        raise LaunchError("agent command template is empty")
    if settings_file is not None:
        argv += ["--settings", str(settings_file)]
    # Claude refuses --session-id together with --resume (unless --fork-session): the resumed id stays.
    if session_uuid and not resume_id:
        argv += ["--session-id", session_uuid]
    return argv


def redis_url_of(client: redis_lib.Redis) -> str:
    """A URL another process (the hook) can use to reach the same Redis server and database."""
    kw = client.connection_pool.connection_kwargs
    db = kw.get("db", 0) or 0
    if kw.get("path"):
        return f"unix://{kw['path']}?db={db}"
    auth = ""
    if kw.get("password"):
        from urllib.parse import quote

        auth = f"{quote(str(kw.get('username') or ''), safe='')}:{quote(str(kw['password']), safe='')}@"
    scheme = "rediss" if "SSL" in client.connection_pool.connection_class.__name__ else "redis"
    return f"{scheme}://{auth}{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{db}"


_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_vars(value: str, environ: Mapping[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``environ`` (unset: empty, as in a shell, with a warning); ``$$`` is ``$``.

    Only this substitution: no commands, globs or quotes — the value is never given to a shell.
    """
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name is None:
            return "$"
        if name not in environ:
            logger.warning("agent.env: $%s is not set in the dispatcher's environment; expanded to ''", name)
        return environ.get(name, "")

    return _VAR.sub(sub, value)


def agent_env(session: str, request: LaunchRequest, agent: AgentSettings, redis_url: str) -> dict[str, str]:
    """Environment exported to the agent (and inherited by its hooks); agent.env values are expanded.

    ``session`` is the ref (``HOST/NAME``) the hook reports under.
    """
    env = {key: expand_vars(value, os.environ) for key, value in agent.env.items()}
    env.update(AQ_SESSION=session, AQ_TASK=f"{request.project}:{request.task_id}", AQ_REDIS_URL=redis_url,
               AQ_QUEUE_DIR=request.queue_dir)
    return env


def _last_lines(text: str, n: int = 15) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def _status(status: int | None) -> str:
    return "unknown" if status is None else str(status)


def _dead_screen(tmux: Tmux, session: str, clock: Callable[[], float]) -> tuple[int | None, str]:
    """Exit status and last screen of a dead pane."""
    # tmux marks the pane dead on EOF and learns the exit status a moment later (SIGCHLD);
    # tmux 3.3a never reports it for ~1 in 6 very short-lived processes, so wait only briefly.
    deadline = clock() + 0.5
    info = tmux.pane_info(session)
    while info.dead_status is None and clock() < deadline:
        _pause(POLL_INTERVAL_S / 5)
        info = tmux.pane_info(session)
    # The "Pane is dead" line scrolls the last output above the visible screen: read some history too.
    return info.dead_status, tmux.capture(session, history=200)


def wait_ready(tmux: Tmux, session: str, deadline: float, clock: Callable[[], float] = time.monotonic,
               output: PaneOutput | None = None) -> str:
    """Look at the pane whenever it writes (``output``; else poll ≤ 50 ms) until the real prompt shows;
    raise DialogError, LaunchError (dead) or PromptTimeout."""
    last = ""
    begun = clock()
    _wait(output, clock, begun, deadline, first=True)  # a moment after the respawn nothing has started yet
    while True:
        snap = tmux.snapshot(session)
        last = snap.text
        dialog = screen.detect_dialog(last)
        if dialog is not None:
            raise DialogError(dialog, f"session {session}; last screen:\n{_last_lines(last)}")
        if snap.info.dead:
            status, last = _dead_screen(tmux, session, clock)
            raise LaunchError(f"agent in {session} exited (status {_status(status)}) before its prompt "
                              f"showed; last screen:\n{_last_lines(last)}")
        if screen.prompt_ready(last):
            return last
        if clock() >= deadline:
            raise PromptTimeout(f"agent in {session} showed no ready prompt in time; last screen:\n"
                                f"{_last_lines(last)}")
        _wait(output, clock, begun, deadline)


def _interval(waited: float) -> float:
    """How long to wait before looking at the pane again, ``waited`` s into a wait (no doorbell)."""
    return FAST_POLL_S if waited < FAST_POLL_FOR_S else POLL_INTERVAL_S


def _wait(output: PaneOutput | None, clock: Callable[[], float], begun: float, deadline: float,
          first: bool = False) -> None:
    """Until the pane writes (then a look is worth it), or the polling interval passed, or ``deadline``."""
    left = max(0.0, deadline - clock())
    if output is None or output.fd is None:
        _pause(min(FAST_POLL_S if first else _interval(clock() - begun), left))
        return
    # With a doorbell the timer is only the safety net (a dead pane writes nothing).
    start = clock()
    if output.wait(min(SILENT_PANE_LOOK_S, left)):
        # An agent draws a screen in a few writes: let it finish the frame. A chatty one (a spinner) is looked
        # at no more often than the polling schedule would have: never more tmux calls than without a doorbell.
        spacing = FAST_POLL_S if first else _interval(clock() - begun)
        _pause(min(max(FAST_POLL_S / 5, spacing - (clock() - start)), max(0.0, deadline - clock())))


def _pause(seconds: float) -> None:
    # The polling interval of a deadline loop, not a fixed wait for something to happen.
    time.sleep(seconds)


def config_dir_of(env: Mapping[str, str]) -> str:
    """The Claude config dir an agent with ``env`` (over ours) uses: where its ``.claude.json`` lives."""
    explicit = env.get("CLAUDE_CONFIG_DIR") or os.environ.get("CLAUDE_CONFIG_DIR")
    if explicit:
        return os.path.abspath(explicit)
    return os.path.abspath(env.get("HOME") or os.environ.get("HOME") or os.path.expanduser("~"))


def _start(tmux: Tmux, session: str, argv: list[str], request: LaunchRequest, env: Mapping[str, str],
           lock: redis_lib.lock.Lock | None, agent: AgentSettings, clock: Callable[[], float],
           output: PaneOutput | None = None) -> str:
    """Start the agent and wait for its prompt, holding the start-up lock of its config dir if there is one."""
    held = None
    if lock is not None:  # None: agent.startup_lock is false
        wait = agent.prompt_timeout * 2
        if not lock.acquire(blocking=True, blocking_timeout=wait):
            raise LaunchError(f"startup lock {lock.name} stayed busy for {wait:.0f}s; another start-up hangs?")
        # A short TTL renewed while we wait: a worker killed mid start-up blocks the host for seconds, not minutes.
        held = Held(lock, STARTUP_LOCK_TTL_S)
    try:
        try:
            # One tmux call: keep the pane (and its last screen) if the agent exits, and start it.
            tmux.respawn(session, argv, cwd=request.project_dir, env=env, remain_on_exit=True,
                         pipe_to=output.path if output is not None else None)
        except TmuxError:
            if not tmux.has_session(session):  # looked at only now: one tmux call less per launch
                raise SessionError(f"tmux session {session!r} does not exist (run 'dispatcher pool create')") from None
            raise
        logger.info("started agent in %s: %s (cwd %s)", session, shlex.join(argv), request.project_dir)
        return wait_ready(tmux, session, clock() + agent.prompt_timeout, clock, output)
    finally:
        if held is not None:
            held.release()


def _confirm(tmux: Tmux, session: str, msg_tag: str, hooks: HookLog | None, after_id: str,
             deadline: float, clock: Callable[[], float], ref: str,
             output: PaneOutput | None = None) -> tuple[str, HookReport | None] | None:
    """Wait until ``deadline`` for proof of submission; None when there is none yet."""
    def tagged(r: HookReport) -> bool:
        # "in", not "startswith": after an API error Claude merges the next prompt with the failed one.
        return msg_tag in r.prompt

    begun = clock()
    while True:
        if hooks is not None:
            report, after_id = hooks.wait_for(ref, "UserPromptSubmit", tagged, deadline=deadline,
                                              after_id=after_id, clock=clock,
                                              block_ms=int(POLL_INTERVAL_S * 1000))
            if report is not None:
                return "hook", report
        snap = tmux.snapshot(session)
        if snap.info.dead:
            status, last = _dead_screen(tmux, session, clock)
            raise LaunchError(f"agent in {session} exited (status {_status(status)}) while its task was submitted; "
                              f"last screen:\n{_last_lines(last)}")
        if clock() >= deadline:
            # Hooks silent but the screen says submitted: never interrupt a working agent.
            if screen.shows_submitted(snap.text, msg_tag):
                if hooks is not None:
                    logger.warning("%s: no UserPromptSubmit hook report; screen shows the task submitted", session)
                return "screen", None
            return None
        if hooks is None and screen.shows_submitted(snap.text, msg_tag):
            return "screen", None
        if hooks is None:
            _wait(output, clock, begun, deadline)


def _wait_paste_shown(tmux: Tmux, session: str, deadline: float, clock: Callable[[], float],
                      output: PaneOutput | None = None) -> None:
    begun = clock()
    while clock() < deadline:
        text = screen.input_text(tmux.capture(session))
        if text:
            return
        _wait(output, clock, begun, deadline)
    logger.warning("%s: pasted text did not show in the input box; pressing Enter anyway", session)


@dataclass(frozen=True)
class _Prepared:
    """How an agent for ``request`` is started in a session: model, argv, environment, cwd."""

    model: str
    resume_id: str | None
    settings_file: Path | None
    argv: list[str]
    env: dict[str, str]
    cwd: Path

    @property
    def key(self) -> str:
        return warm_tag.fingerprint(self.argv, self.env, self.cwd, self.settings_file)


def _prepare(session: str, request: LaunchRequest, agent: AgentSettings, redis: redis_lib.Redis, state_dir: Path,
             redis_url: str | None, ref: str, *, write: bool = True) -> _Prepared:
    """``write``: (re)write the hooks' settings file; False only reads it (comparing fingerprints, every pass)."""
    model = agent.model_for(request.priority)
    resume_id = read_resume_id(agent, session)
    url = redis_url or redis_url_of(redis)
    settings_file = None
    if agent.hooks:
        settings_file = settings_path(Path(state_dir), session)
        if write or not settings_file.exists():
            settings_file = write_settings(Path(state_dir), session, redis_url=url)
    argv = build_argv(agent.command, model=model, resume_id=resume_id, settings_file=settings_file,
                      session_uuid=request.session_uuid if agent.hooks else None)
    env = agent_env(ref, request, agent, url)
    return _Prepared(model, resume_id, settings_file, argv, env, Path(request.project_dir))


def _startup_lock(redis: redis_lib.Redis, agent: AgentSettings, ref: str,
                  env: Mapping[str, str]) -> redis_lib.lock.Lock | None:
    host = ref.split("/", 1)[0] if "/" in ref else ""
    return (redis.lock(keys.startup_lock(host, config_dir_of(env)), timeout=STARTUP_LOCK_TTL_S, sleep=0.02,
                       thread_local=False) if agent.startup_lock else None)


def launch_key(session: str, request: LaunchRequest, agent: AgentSettings, redis: redis_lib.Redis, *,
               state_dir: Path, redis_url: str | None = None, ref: str | None = None) -> str:
    """The fingerprint :func:`launch` would start ``request``'s agent with (compare with a :class:`WarmTag`)."""
    return _prepare(session, request, agent, redis, state_dir, redis_url, ref or session, write=False).key


def start_warm(tmux: Tmux, session: str, request: LaunchRequest, agent_settings: AgentSettings,
               redis: redis_lib.Redis, *, state_dir: Path, clock: Callable[[], float] = time.monotonic,
               redis_url: str | None = None, ref: str | None = None) -> WarmTag:
    """Boot an agent for ``request``'s project and model in ``session`` and tag it warm; type nothing into it.

    ``request`` names no task (its ``task_id`` is ignored); the agent waits at its prompt until a
    dispatch whose launch fits it pastes a task (:func:`launch` with ``warm``). A session with a
    resume id waiting is never warmed: that conversation goes to the task it belongs to.
    """
    agent = agent_settings
    ref = ref or session
    if not Path(request.project_dir).is_dir():
        raise LaunchError(f"project directory {request.project_dir} does not exist")
    prep = _prepare(session, request, agent, redis, state_dir, redis_url, ref)
    if prep.resume_id is not None:
        raise LaunchError(f"{session} has a conversation to resume: not warmed")
    env = {**prep.env, "AQ_TASK": ""}  # it belongs to no task: its hook reports name none
    hooks = HookLog(redis) if agent.hooks else None
    after_id = hooks.last_id(ref) if hooks is not None else "0-0"
    warm_tag.clear_tag(tmux, session)
    with PaneOutput() as output:
        _start(tmux, session, prep.argv, request, env, _startup_lock(redis, agent, ref, env), agent, clock, output)
    tag = WarmTag(prep.key, request.session_uuid if agent.hooks else "-", request.project, prep.model, after_id)
    warm_tag.write_tag(tmux, session, tag)
    logger.info("%s: warm agent ready (%s, %s)", session, request.project, prep.model)
    return tag


def warm_unusable(tmux: Tmux, session: str, warm: WarmTag, hooks: HookLog | None, ref: str) -> str:
    """Why the pane's warm agent cannot take a task ('' when it can: still there, pristine, at its prompt)."""
    current = warm_tag.read_tag(tmux, session)
    if current is None or current.key != warm.key or current.uuid != warm.uuid:
        return "the pane no longer holds that agent"
    snap = tmux.snapshot(session)
    if snap.info.dead or not screen.prompt_ready(snap.text):
        return "it is not at a ready prompt"
    if screen.input_text(snap.text):
        return "its input box is not empty"
    if hooks is not None and any(r.event == "UserPromptSubmit"
                                 for r in hooks.read(ref, after_id=warm.hooks_after, count=1000)):
        return "it was given a prompt already"
    return ""


def launch(tmux: Tmux, session: str, request: LaunchRequest, agent_settings: AgentSettings,
           redis: redis_lib.Redis, *, state_dir: Path, clock: Callable[[], float] = time.monotonic,
           redis_url: str | None = None, ref: str | None = None, warm: WarmTag | None = None) -> LaunchResult:
    """Start an agent in ``session`` and submit ``request``'s message; raise a LaunchError subclass on failure.

    ``ref`` (``HOST/NAME``) names the session in hook reports and the start-up lock's host; default ``session``.
    ``warm``: the session's warm tag as the dispatch saw it; its agent is used (no start, only the paste)
    when it still fits and is pristine, else it is replaced by a cold start.
    """
    agent = agent_settings
    ref = ref or session
    hooks = HookLog(redis) if agent.hooks else None
    prep = _prepare(session, request, agent, redis, state_dir, redis_url, ref)
    started = clock()
    why_cold = "no warm agent"
    if warm is not None:
        # The dispatch compared fingerprints; the pane itself is checked here, just before the paste
        # (a warm agent's tag on the pane also proves the session exists).
        why_cold = ("its model or environment does not fit the task" if warm.key != prep.key
                    else warm_unusable(tmux, session, warm, hooks, ref))
        if why_cold:
            logger.info("%s: warm agent not used (%s): cold start", session, why_cold)
            if agent.hooks and request.session_uuid == warm.uuid:
                # That id may have a conversation now (someone typed into it): the cold agent gets its own.
                request = replace(request, session_uuid=str(uuid4()))
                prep = _prepare(session, request, agent, redis, state_dir, redis_url, ref)
    if why_cold and not Path(request.project_dir).is_dir():
        raise LaunchError(f"project directory {request.project_dir} does not exist")
    after_id = hooks.last_id(ref) if hooks is not None else "0-0"
    if warm is not None or agent.prewarm:
        # From here on the pane's agent belongs to this task, whichever it is. (Without warming no tag is
        # written, and a missing session is found by the start itself: one tmux call less per launch.)
        warm_tag.clear_tag(tmux, session)
    if not why_cold:
        logger.info("%s: warm agent takes %s:%s", session, request.project, request.task_id)
        # No doorbell: the pane's output goes to no pipe of ours (the agent was started by another launch).
        return _deliver(tmux, session, request, agent, prep, hooks, after_id, started, clock, ref, None, warm=True)
    with PaneOutput() as output:
        _start(tmux, session, prep.argv, request, prep.env, _startup_lock(redis, agent, ref, prep.env), agent, clock,
               output)
        return _deliver(tmux, session, request, agent, prep, hooks, after_id, started, clock, ref, output, warm=False)


def _deliver(tmux: Tmux, session: str, request: LaunchRequest, agent: AgentSettings, prep: _Prepared,
             hooks: HookLog | None, after_id: str, started: float, clock: Callable[[], float], ref: str,
             output: PaneOutput | None, *, warm: bool) -> LaunchResult:
    """Paste ``request``'s message into the agent at its prompt, press Enter until submitted (proved), or raise."""
    model, resume_id, argv = prep.model, prep.resume_id, prep.argv
    ready = clock()

    msg_tag = delivery_tag(request.task_id)
    message = build_message(request.task_id, request.body, project=request.project, footer=agent.message_footer,
                            queue_dir=request.queue_dir)
    tmux.paste(session, message)
    _wait_paste_shown(tmux, session, clock() + PASTE_SHOW_S, clock, output)
    per_try = agent.submit_timeout / max(1, agent.submit_retries)
    proof: tuple[str, HookReport | None] | None = None
    presses = 0
    while presses < max(1, agent.submit_retries) and proof is None:
        tmux.send_keys(session, "Enter")
        presses += 1
        proof = _confirm(tmux, session, msg_tag, hooks, after_id, clock() + per_try, clock, ref, output)
        if proof is None:
            logger.warning("%s: %s not confirmed after Enter #%d", session, msg_tag, presses)
    if proof is None:
        # Leave the input empty so a later launch or an operator starts clean.
        tmux.send_keys(session, "Escape")
        tmux.send_keys(session, "C-u")
        raise SubmitError(f"{session}: message {msg_tag} was pasted but never shown as submitted "
                          f"after {presses} Enter presses; last screen:\n{_last_lines(tmux.capture(session))}")
    if resume_id is not None:
        # Consumed only now: a failed launch keeps the conversation resumable.
        resume_path(agent, session).unlink(missing_ok=True)
    by, report = proof
    result = LaunchResult(session=session, agent_uuid=resume_id or (request.session_uuid if agent.hooks else ""),
                          resumed=resume_id is not None,
                          model=model, argv=tuple(argv), tag=msg_tag, confirmed_by=by, enter_presses=presses,
                          ready_after=ready - started, submit_after=clock() - ready,
                          hook_id=report.id if report else None, warm=warm)
    logger.info("%s: delivered %s:%s (%s, confirmed by %s in %.3fs)", session, request.project, request.task_id,
                model, by, result.submit_after)
    return result
