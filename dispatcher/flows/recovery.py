"""Recovery: abandoned launches, sessions stuck mid-launch, and the tasks of lost hosts.

Local (each host, for its own claims, from its monitor pass): a ``.launching``
file whose flock nobody holds was left by a dead worker of this host. If the
agent verifiably received the task (hook report or screen) it is promoted to
``.dispatched``; otherwise the agent is stopped and the task goes back to
pending. Either way it runs exactly once.

Cluster (any host, from the full scan): a claimed task whose owner record names
a lost host — or no live host at all for ``host_lost_after`` — is taken back:
the record becomes a tombstone (the host, if it returns, stops its agent
instead of resuming it), the task goes back to pending with a note, and the
attempt counts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dispatcher.agent import pool, pool_state
from dispatcher.agent.launcher import resume_path
from dispatcher.core import defaults as d
from dispatcher.core import keys, screen
from dispatcher.core.errors import ClaimError, TmuxError
from dispatcher.core.message import delivery_tag
from dispatcher.flows import claim as cl
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.store import attempts, events, hosts, owners
from dispatcher.store.hook_log import HookLog
from dispatcher.store.sessions import SessionInfo, State

logger = logging.getLogger(__name__)

CLAIM_GRACE_S = d.CLAIM_GRACE_S


def _pool_infos(ports: Ports) -> dict[str, SessionInfo]:
    """States of this host's pool sessions (one tmux call, one Redis round trip)."""
    return pool_state.read_all(ports.r, ports.tmux, ports.host, ports.settings.pool.names())


def delivered(ports: Ports, info: SessionInfo) -> bool:
    """Evidence that ``info.task`` was submitted to the agent in ``info.name``."""
    task_tag = delivery_tag(info.task)
    report = HookLog(ports.r).latest(info.ref, "UserPromptSubmit")
    if report is not None and task_tag in report.prompt and report.time >= info.since - 1:
        return True
    try:
        snap = ports.tmux.snapshot(info.name)
    except TmuxError:
        return False
    return not snap.info.dead and screen.shows_submitted(snap.text, task_tag)


def _owner_session(ports: Ports, project: str, task_id: str) -> SessionInfo | None:
    for info in _pool_infos(ports).values():
        if info.project == project and info.task == task_id and info.state in (
                State.LAUNCHING, State.WORKING, State.WAITING):
            return info
    return None


def _mine(ports: Ports, owner: str | None, alone: bool) -> bool:
    """A claim this host may judge by its flock: recorded as ours, or unrecorded while no other host lives."""
    return owners.host_of(owner) == ports.host if owner else alone


def recover_launching(ports: Ports) -> list[str]:
    """Resolve this host's abandoned ``.launching`` files; returns what was done, for the log."""
    done: list[str] = []
    now = ports.clock()
    others = [n for n in hosts.alive(ports.r, now, ports.settings.host_lost_after) if n != ports.host]
    for proj in aq.discover_projects(ports.settings.projects_dir, ports.settings.projects):
        snap = aq.list_project(proj)
        for name in sorted(snap.inbox):
            if not name.endswith(d.TASK_SUFFIX + d.LAUNCHING) or name.startswith("."):
                continue
            path = proj.inbox / name
            task_id = name[: -len(d.TASK_SUFFIX + d.LAUNCHING)]
            pending = proj.inbox / (task_id + d.TASK_SUFFIX)
            _drop_half_claim(pending, path)
            try:
                age = now - os.stat(path, follow_symlinks=False).st_ctime
            except FileNotFoundError:
                continue
            if age < CLAIM_GRACE_S or not _mine(ports, owners.get(ports.r, proj.name, task_id), not others):
                continue
            if cl.claim_is_live(path):
                continue
            done.append(_resolve(ports, proj, task_id, path))
    return done


def _drop_half_claim(pending: Path, launching: Path) -> None:
    """A crash between link and unlink leaves both names on one inode: keep the claimed one."""
    try:
        if os.path.samefile(pending, launching):
            os.unlink(pending)
    except FileNotFoundError:
        pass


def _resolve(ports: Ports, proj: aq.Project, task_id: str, path: Path) -> str:
    key = f"{proj.name}:{task_id}"
    info = _owner_session(ports, proj.name, task_id)
    try:
        if info is not None and delivered(ports, info):
            cl.adopt(ports.r, path, proj.name, task_id, info.ref)
            pool_state.transition(ports.r, ports.tmux, info, State.WORKING, since=info.since)
            events.emit(ports.r, "recovered", task=key, session=info.ref, detail="agent had it: dispatched")
            return f"{key}: promoted (agent in {info.name} had received it)"
        if info is not None:
            pool.reset_pane(ports.tmux, info.name, ports.settings)
            pool_state.set_idle(ports.r, ports.tmux, info, now=ports.clock(), detail="recovered abandoned launch")
        record = owners.get(ports.r, proj.name, task_id)  # read first: once pending, another may claim it
        cl.give_back(ports.r, path, proj.name, task_id, record if owners.host_of(record) == ports.host else None)
    except ClaimError as exc:
        logger.warning("recovery of %s: %s", key, exc)
        return f"{key}: left as is ({exc})"
    events.emit(ports.r, "recovered", task=key, session=info.ref if info else "", detail="back to pending")
    return f"{key}: returned to pending"


def fence_session(ports: Ports, info: SessionInfo, other: str) -> str:
    """The task was given to someone else (this host was lost meanwhile): stop the agent, never resume it."""
    if info.state is not State.MISSING:
        pool.reset_pane(ports.tmux, info.name, ports.settings)
    pool_state.set_idle(ports.r, ports.tmux, info, now=ports.clock(), detail=f"fenced: {info.task_key} is not ours")
    resume_path(ports.settings.agent, info.name).unlink(missing_ok=True)
    events.emit(ports.r, "fenced", task=info.task_key, session=info.ref, detail=f"owner record: {other[:200]}")
    return f"fenced off {info.task_key} ({other[:80]})"


def recover_sessions(ports: Ports) -> list[str]:
    """Sessions left in ``launching`` by a dead worker, with no launch in progress any more."""
    done: list[str] = []
    now = ports.clock()
    for name, info in _pool_infos(ports).items():
        if info.state is not State.LAUNCHING or now - info.since < CLAIM_GRACE_S:
            continue
        if cl.session_locked(ports.r, info.ref):
            continue
        other = owners.confirm(ports.r, info.project, info.task, info.ref) if info.task else None
        if other is not None:  # taken back while this host was away: never promote or resume it here
            done.append(f"{name}: {fence_session(ports, info, other)}")
            continue
        proj = aq.project(ports.settings.projects_dir, info.project) if info.project else None
        if proj is not None and proj.task_path(info.task, d.LAUNCHING).exists():
            continue  # recover_launching decides for the file and the session together
        if proj is not None and proj.task_path(info.task, d.DISPATCHED).exists():
            new = pool_state.transition(ports.r, ports.tmux, info, State.WORKING, since=info.since)
            done.append(f"{name}: working on {info.task_key}")
        else:
            pool.reset_pane(ports.tmux, name, ports.settings)
            new = pool_state.set_idle(ports.r, ports.tmux, info, now=now, detail="recovered from an abandoned launch")
            done.append(f"{name}: idle")
        events.emit(ports.r, "recovered", task=info.task_key, session=info.ref, detail=f"session -> {new.state.value}")
    return done


def recover_local(ports: Ports) -> list[str]:
    """This host's part: abandoned launches, then sessions left mid-launch."""
    return recover_launching(ports) + recover_sessions(ports)


def _claimed(ports: Ports) -> list[tuple[aq.Project, str, Path]]:
    """Every ``.launching``/``.dispatched`` file of every project: (project, task id, path)."""
    found = []
    for proj in aq.discover_projects(ports.settings.projects_dir, ports.settings.projects):
        for name in sorted(aq.list_project(proj).inbox):
            if name.startswith("."):
                continue
            for suffix in (d.LAUNCHING, d.DISPATCHED):
                if name.endswith(d.TASK_SUFFIX + suffix):
                    found.append((proj, name[: -len(d.TASK_SUFFIX + suffix)], proj.inbox / name))
    return found


def recover_cluster(ports: Ports) -> list[str]:
    """Take back the claimed tasks of lost hosts (and of no live host at all); any host may run it."""
    now = ports.clock()
    lost_after = ports.settings.host_lost_after
    registry = hosts.read_all(ports.r)
    claimed = _claimed(ports)
    records = owners.get_many(ports.r, [(p.name, t) for p, t, _ in claimed])
    done: list[str] = []
    for proj, task_id, path in claimed:
        owner = records[(proj.name, task_id)]
        host = owners.host_of(owner)
        if host == ports.host or (host is not None and host in registry):
            if host == ports.host or registry[host].alive(now, lost_after):  # we run this: we are alive
                ports.r.delete(keys.orphan_since(proj.name, task_id))
                continue
            why = f"host {host} lost (no heartbeat for {now - registry[host].last_seen:.0f}s) while it held the task"
        else:
            # No record (a flush, a claimer dead at once) or a host nobody registers: wait for a live host to
            # re-assert it (every heartbeat does) before taking it back.
            ports.r.set(keys.orphan_since(proj.name, task_id), f"{now:.3f}", nx=True, ex=owners.TOMBSTONE_TTL_S)
            since = float(ports.r.get(keys.orphan_since(proj.name, task_id)) or now)
            if now - since < lost_after or (path.name.endswith(d.LAUNCHING) and cl.claim_is_live(path)):
                continue
            why = f"no live host owns it (owner record {owner or 'missing'} for {now - since:.0f}s)"
        done.append(_take_back(ports, proj, task_id, path, owner, why))
        ports.r.delete(keys.orphan_since(proj.name, task_id))
    return [x for x in done if x]


def _take_back(ports: Ports, proj: aq.Project, task_id: str, path: Path, owner: str | None, why: str) -> str:
    """Fence the old owner off, then put the task back to pending (or ``.failed`` after too many attempts)."""
    key = f"{proj.name}:{task_id}"
    if not owners.fence(ports.r, proj.name, task_id, owner, why):
        return ""  # the record changed since we read it: its owner is alive after all
    count = attempts.count(ports.r, proj.name, task_id)
    note = f"{why}\nowner: {owner or 'unrecorded'}\nattempt {count}/{ports.settings.max_launch_attempts}"
    try:
        if count >= ports.settings.max_launch_attempts:
            cl.fail(path, note)  # the record is a tombstone already: only the slot to free
            cl.drop_slot(ports.r, proj.name, task_id, None if owners.is_stone(owner) else owner)
            attempts.forget(ports.r, proj.name, task_id)
            events.emit(ports.r, "failed", task=key, session=owner or "", detail=why)
            return f"{key}: failed ({why})"
        cl.release(path)
        cl.drop_slot(ports.r, proj.name, task_id, None if owners.is_stone(owner) else owner)
        markers.write_failure(proj.task_path(task_id), note)
    except (ClaimError, OSError) as exc:  # the owner finished or moved it meanwhile
        logger.warning("take-back of %s: %s", key, exc)
        return f"{key}: left as is ({exc})"
    events.emit(ports.r, "recovered", task=key, session=owner or "", detail=f"{why}; back to pending")
    return f"{key}: back to pending ({why})"


#: Sessions in these states own their task and re-assert its record (a flush must not orphan it).
_HOLDING = (State.LAUNCHING, State.WORKING, State.WAITING, State.LIMITED)


def reassert_owners(ports: Ports) -> None:
    """Keep (or, after a flush, rewrite) the owner records of this host's sessions; run with each heartbeat."""
    for info in _pool_infos(ports).values():
        if info.task and info.state in _HOLDING:
            owners.confirm(ports.r, info.project, info.task, info.ref)  # not ours: the monitor fences it
