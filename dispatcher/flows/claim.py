"""The claim of a task: taken, proved and given back in one place.

A task belongs to one session from its claim until it is done, failed or given
back. Four things say so, and only this module changes them together:

- the **session lock** (Redis, TTL, renewed): one launch per session at a time, across workers;
- the **rename** ``<id>.md`` → ``<id>.md.launching`` (one atomic no-replace move, so of two
  claimers exactly one wins) and the later moves to ``.dispatched``, ``.failed`` or back;
- the **flock** on the ``.launching`` file, held by the launching process for the whole
  launch: the kernel drops it if that process dies, so recovery tells a live launch from
  an abandoned one even after Redis was emptied;
- the **owner record** in Redis naming the session ``HOST/NAME``: an flock on a shared
  filesystem proves nothing across machines, the record does (store/owners.py).

Giving back always moves the file first and then drops the record, so a crash in
between leaves a file whose record still names its last owner (recovery's case), never
a pending file that someone else may claim while our record says it is ours.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

import redis

from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.core.taskfile import Task
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.inbox.files import move_no_replace
from dispatcher.inbox.fsio import flock_held, with_suffix
from dispatcher.store import locks, owners

logger = logging.getLogger(__name__)


def owner_id() -> str:
    """Who holds a session lock, for people and for recovery: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- the session lock -------------------------------------------------------------------------------------------

def lock_session(r: redis.Redis, ref: str) -> locks.Held | None:
    """Take the launch lock of session ``ref`` (``HOST/NAME``) without waiting; None when another worker has it."""
    return locks.try_lock_session(r, ref, d.LAUNCH_LOCK_TTL_S, owner_id())


def session_locked(r: redis.Redis, ref: str) -> bool:
    """True while some worker launches (or resumes) into session ``ref``."""
    return locks.session_locked(r, ref)


# -- the moves of a task file -----------------------------------------------------------------------------------

def claim(task_path: Path) -> Path:
    """``<id>.md`` → ``<id>.md.launching``; raise ClaimError if another claimer won."""
    dst = with_suffix(task_path, d.LAUNCHING)
    move_no_replace(task_path, dst)
    return dst


def release(path: Path) -> Path:
    """``.launching`` (or ``.dispatched``) → back to ``<id>.md`` (pending again)."""
    dst = with_suffix(path, "")
    move_no_replace(path, dst)
    return dst


def promote(launching: Path) -> Path:
    """``.launching`` → ``.dispatched`` (submitted to an agent); drops the blocked/stuck markers."""
    dst = with_suffix(launching, d.DISPATCHED)
    move_no_replace(launching, dst)
    pending = with_suffix(launching, "")
    markers.remove_marker(pending, d.BLOCKED)
    markers.remove_marker(pending, d.STUCK)
    return dst


def fail(path: Path, reason: str) -> Path:
    """``.launching``/``.dispatched`` → ``.failed`` with the reason in a ``.failure`` note beside it."""
    dst = with_suffix(path, d.FAILED)
    move_no_replace(path, dst)
    markers.write_failure(with_suffix(path, ""), reason)
    return dst


def retry(failed: Path) -> Path:
    """``.failed`` → ``<id>.md`` (pending again); the failure note is removed."""
    dst = with_suffix(failed, "")
    move_no_replace(failed, dst)
    markers.remove_marker(dst, markers.FAILURE_NOTE)
    return dst


# -- the flock: a live owner on this host -----------------------------------------------------------------------

class FileClaim:
    """An flock on a claimed ``.launching`` file, held for the whole launch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise

    def close(self) -> None:
        os.close(self.fd)


def claim_is_live(path: Path) -> bool:
    """True when some live process holds the flock of this ``.launching`` file.

    A filesystem that cannot flock raises: recovery must not take a launch it cannot judge for abandoned.
    """
    return flock_held(path, exclusive=True)


# -- the owner record beside the file ---------------------------------------------------------------------------

def give_back(r: redis.Redis, path: Path, project: str, task_id: str, owner: str | None) -> Path:
    """A claimed or dispatched task back to pending; ``owner``'s record (if named) becomes a released stone."""
    pending = release(path)
    if owner:
        owners.drop(r, project, task_id, owner)
    return pending


def fail_owned(r: redis.Redis, path: Path, project: str, task_id: str, owner: str, reason: str) -> Path:
    """A claimed or dispatched task to ``.failed`` (with its reason); ``owner``'s record is dropped."""
    failed = fail(path, reason)
    owners.drop(r, project, task_id, owner)
    return failed


def adopt(r: redis.Redis, launching: Path, project: str, task_id: str, owner: str) -> Path:
    """An abandoned launch the agent in ``owner`` did receive: ``.dispatched``, recorded as ``owner``'s."""
    dispatched = promote(launching)
    owners.take(r, project, task_id, owner)
    return dispatched


# -- a dispatched task's end, as its session's monitor decides it ------------------------------------------------
# The agent works on the file itself (it moves it to done/, sometimes copies it), so a move that fails here is
# logged, not raised: the monitor frees the session either way, and the owner record goes with it.

def finished(r: redis.Redis, project: str, task_id: str, owner: str) -> None:
    """The agent moved its task to done/: the owner record becomes a released stone."""
    owners.drop(r, project, task_id, owner)


def requeue_dispatched(r: redis.Redis, proj: aq.Project, task_id: str, owner: str) -> None:
    """The agent ended without finishing: ``.dispatched`` back to pending for another attempt."""
    try:
        move_no_replace(proj.task_path(task_id, d.DISPATCHED), proj.task_path(task_id))
    except ClaimError as exc:
        logger.warning("cannot requeue %s:%s: %s", proj.name, task_id, exc)
    owners.drop(r, project=proj.name, task_id=task_id, owner=owner)


def fail_dispatched(r: redis.Redis, proj: aq.Project, task_id: str, owner: str, note: str) -> None:
    """The task failed: ``.dispatched`` → ``.failed`` with ``note`` beside it."""
    try:
        fail(proj.task_path(task_id, d.DISPATCHED), note)
    except ClaimError as exc:
        logger.warning("cannot mark %s:%s failed: %s", proj.name, task_id, exc)
    owners.drop(r, project=proj.name, task_id=task_id, owner=owner)


def undo_done(proj: aq.Project, task_id: str) -> None:
    """done/ must not claim what is not on the base branch (a worktree merge failed): back to ``.dispatched``."""
    try:
        move_no_replace(aq.done_path(proj, task_id), proj.task_path(task_id, d.DISPATCHED))
    except ClaimError as exc:
        logger.warning("cannot take %s:%s back from done/: %s", proj.name, task_id, exc)


# -- taking a task ----------------------------------------------------------------------------------------------

def running_count(settings: Settings, project: str) -> int:
    """Tasks of ``project`` claimed or running now (its ``.launching`` + ``.dispatched`` files)."""
    inbox = aq.project(settings.projects_dir, project).inbox
    try:
        names = os.listdir(inbox)
    except OSError:
        return 0
    ends = (d.TASK_SUFFIX + d.LAUNCHING, d.TASK_SUFFIX + d.DISPATCHED)
    return sum(1 for n in names if n.endswith(ends) and not n.startswith("."))


def claim_within_limit(r: redis.Redis, settings: Settings, task: Task) -> Path | None:
    """Claim ``task`` unless its project is at its ``max_parallel`` (None then); ClaimError if taken.

    The plan already capped the project, but two workers may both have seen the last free
    slot: count and claim under a short per-project Redis lock (a rename is all it guards,
    and the lock is shared by every host), so the count one sees includes the other's claim.
    """
    limit = settings.limit_for(task.project)
    if not limit:
        return claim(task.path)
    lock = r.lock(keys.project_claim_lock(task.project), timeout=d.PROJECT_CLAIM_LOCK_TTL_S,
                  blocking_timeout=d.PROJECT_CLAIM_LOCK_TTL_S, sleep=0.02, thread_local=False)
    if not lock.acquire(blocking=True):
        return None
    try:
        if running_count(settings, task.project) >= limit:
            return None
        return claim(task.path)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # expired (a very slow disk): the rename is done anyway
            logger.warning("project claim lock of %s expired before release", task.project)


class Claim:
    """A task this process claimed for one session: the ``.launching`` file (flocked) and the owner record."""

    def __init__(self, r: redis.Redis, task: Task, owner: str, path: Path, flock: FileClaim) -> None:
        self.r = r
        self.project = task.project
        self.task_id = task.id
        self.owner = owner
        self.path = path
        self._flock = flock

    def release(self) -> Path:
        """Back to pending (nothing wrong with the task, or it changed while claimed); the record is dropped."""
        return give_back(self.r, self.path, self.project, self.task_id, self.owner)

    def fail(self, reason: str) -> Path:
        """To ``.failed`` with ``reason``; the record is dropped."""
        return fail_owned(self.r, self.path, self.project, self.task_id, self.owner, reason)

    def promote(self) -> Path:
        """Delivered: ``.dispatched``, still owned by the session (ClaimError if the agent already moved it)."""
        return promote(self.path)

    def close(self) -> None:
        """Let go of the flock (the launch is over, whatever its outcome)."""
        self._flock.close()


def take(r: redis.Redis, settings: Settings, task: Task, owner: str) -> Claim | None:
    """Claim ``task`` for session ``owner`` (``HOST/NAME``): rename, owner record, flock.

    None when its project has no free slot; ClaimError when another worker has it (or it vanished).
    """
    launching = claim_within_limit(r, settings, task)
    if launching is None:
        return None
    # Ownership any host can check (an flock proves nothing across machines).
    owners.take(r, task.project, task.id, owner)
    try:
        flock = FileClaim(launching)
    except OSError as exc:  # vanished or swapped between claim and lock
        logger.warning("cannot lock %s: %s", launching, exc)
        raise ClaimError(str(exc)) from exc
    return Claim(r, task, owner, launching, flock)
