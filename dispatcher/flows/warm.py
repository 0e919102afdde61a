"""Pre-warmed agents (``agent.prewarm``): boot agents in free sessions before their tasks arrive.

An agent's cwd is its task's project directory, and the real CLI fixes it (and its trust
dialog) at start-up, so a warm agent is started *for* a project and a model: one per
(project, model) the next tasks need. The targets, most wanted first: the head of each
project's queue in the ready index (tasks waiting for a slot, say), then the pairs this
host dispatched most recently (an idle fleet expects more of the same). Projects whose
tasks run in their own git worktree are never warmed: no agent can start in a worktree
that does not exist yet.

A warm agent's session stays ``idle``: free for dispatch, never counted as working, never
watched by the monitor. The pass takes the session's launch lock while it starts the agent,
so a dispatch never races it; a worker killed meanwhile leaves an untagged agent that the
next warm pass or dispatch replaces (the session's state never changed). Only a dispatch
ever types into a warm agent (flows/launch.fitting_warm, agent/launcher.launch).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dispatcher.agent import pool, warm
from dispatcher.core import keys
from dispatcher.core.defaults import WARM_LOCK_TTL_S
from dispatcher.core.errors import DialogError, LaunchError, TmuxError
from dispatcher.core.ready import decode, members_in_order
from dispatcher.core.taskfile import is_safe_segment
from dispatcher.flows import claim as cl
from dispatcher.flows import launch
from dispatcher.store import locks, pause, ready_index, warm_hints
from dispatcher.store.sessions import State

if TYPE_CHECKING:
    from dispatcher.flows.dispatch import Dispatcher

logger = logging.getLogger(__name__)

#: Ready-index entries looked at per project for targets (the head says which model comes next).
HEAD = 1


def enabled(disp: Dispatcher) -> bool:
    """Warming is on, and a finished task's agent exits (``recycle: keep`` leaves it running: nothing to warm)."""
    agent = disp.settings.agent
    return agent.prewarm and agent.recycle == "exit"


def targets(disp: Dispatcher) -> list[tuple[str, str]]:
    """(project, priority) pairs to keep a warm agent for, most wanted first, one per (project, model)."""
    held = set(pause.holds(disp.r, disp.clock()))
    fetched = ready_index.heads(disp.r, HEAD, exclude=sorted(held))
    pairs: list[tuple[str, str]] = []
    for project, member in members_in_order([(p, m) for p, (members, _) in fetched.items() for m in members]):
        entry = decode(project, member)
        if entry is not None:
            pairs.append((project, entry.priority))
    pairs += [(p, prio) for p, prio in warm_hints.recent(disp.r, disp.host) if p not in held]
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for project, priority in pairs:
        model = disp.settings.agent.model_for(priority)
        if (project, model) in seen or not _warmable(disp, project):
            continue
        seen.add((project, model))
        out.append((project, priority))
    return out


def _warmable(disp: Dispatcher, project: str) -> bool:
    if not is_safe_segment(project) or disp.settings.project_settings(project).isolation == "worktree":
        return False
    if disp.settings.projects and project not in disp.settings.projects:
        return False
    return (disp.settings.projects_dir / project).is_dir()


def remember(disp: Dispatcher, project: str, priority: str) -> None:
    """A task of ``project`` at ``priority`` was dispatched here: warm for it when nothing else waits."""
    if enabled(disp):
        warm_hints.remember(disp.r, disp.host, project, priority, disp.clock())


def warm_free(disp: Dispatcher) -> list[str]:
    """One pass: give each target a warm agent in a free session of this host; returns a line per start."""
    if not enabled(disp) or disp.paused_until(disp.clock()) or disp.agent_missing():
        return []
    wanted = targets(disp)
    if not wanted:
        return []
    # One pass per host at a time: two would warm two sessions for one target.
    held = locks.try_acquire(disp.r, keys.warm_pass_lock(disp.host), WARM_LOCK_TTL_S, cl.owner_id())
    if held is None:
        return []
    try:
        return _pass(disp, wanted)
    finally:
        held.release()


def _pass(disp: Dispatcher, wanted: list[tuple[str, str]]) -> list[str]:
    free = disp.free_sessions()
    tags = {name: warm.read_tag(disp.tmux, name) for name in free}
    models = {pair: disp.settings.agent.model_for(pair[1]) for pair in wanted}
    # A session already warm for a target keeps it (if it still fits: else it is started again below).
    spare = list(free)
    todo: list[tuple[str, str]] = []
    for pair in wanted:
        holder = next((n for n in spare if (tag := tags[n]) is not None
                       and (tag.project, tag.model) == (pair[0], models[pair])), None)
        if holder is not None and _fits(disp, holder, tags[holder], pair):
            spare.remove(holder)
        else:
            todo.append(pair)
    # Cold sessions first; then sessions warm for something no longer wanted.
    spare.sort(key=lambda n: tags[n] is not None)
    started = []
    for pair, name in zip(todo, spare):
        line = warm_session(disp, name, *pair)
        if line:
            started.append(line)
    return started


def _fits(disp: Dispatcher, name: str, tag: warm.WarmTag | None, pair: tuple[str, str]) -> bool:
    """The tagged agent is what a launch for ``pair`` would start now (same env, settings, model, cwd) and alive."""
    if tag is None or not launch.tag_fits(disp.settings, disp.r, name, str(disp.ref(name)), tag, *pair):
        return False
    try:
        return not disp.tmux.pane_info(name).dead
    except TmuxError:
        return False


def warm_session(disp: Dispatcher, name: str, project: str, priority: str) -> str:
    """Start a warm agent for (``project``, ``priority``) in free session ``name``; '' when it did not."""
    ref = str(disp.ref(name))
    if warm_hints.backing_off(disp.r, ref):
        return ""
    # The launch lock, so no dispatch races the start; a short TTL (renewed while held), so a worker
    # killed meanwhile leaves the session free again within seconds.
    held = locks.try_lock_session(disp.r, ref, WARM_LOCK_TTL_S, cl.owner_id())
    if held is None:
        return ""  # a dispatch (or another pass) has it
    try:
        info = disp.session_info(name)
        if info.state is not State.IDLE or info.in_cooldown(disp.clock(), disp.settings.pool.cooldown):
            return ""
        try:
            tag = launch.start_warm(disp.settings, disp.r, disp.tmux, name, ref, project, priority)
        except (LaunchError, DialogError, TmuxError, OSError) as exc:
            # Not a task's failure: leave the session cold (a dispatch starts its agent as today), retry later.
            logger.warning("%s: warm start for %s failed: %s", name, project, str(exc).splitlines()[0])
            pool.reset_pane(disp.tmux, name, disp.settings)
            warm_hints.back_off(disp.r, ref, max(disp.settings.pool.cooldown, 1.0))
            return ""
    finally:
        held.release()
    # A task that came while the start held the session found it busy: offer it the session now.
    waiting = ready_index.heads(disp.r, 1, exclude=sorted(pause.holds(disp.r, disp.clock())))
    if any(members for members, _ in waiting.values()):
        disp.request_assign(disp.ref(name))
    return f"{name}: warm for {project} ({tag.model})"
