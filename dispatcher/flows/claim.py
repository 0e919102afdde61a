"""The claim of a task: taken, proved and given back in one place.

A task belongs to one session from its claim until it is done, failed or given
back. Five things say so, and only this module changes them together:

- the **session lock** (Redis, TTL, renewed): one launch per session at a time, across workers;
- the **rename** ``<id>.md`` → ``<id>.md.launching`` (one atomic no-replace move, so of two
  claimers exactly one wins) and the later moves to ``.dispatched``, ``.failed`` or back;
- the **flock** on the ``.launching`` file, held by the launching process for the whole
  launch: the kernel drops it if that process dies, so recovery tells a live launch from
  an abandoned one even after Redis was emptied;
- the **owner record** in Redis naming the session ``HOST/NAME``: an flock on a shared
  filesystem proves nothing across machines, the record does (store/owners.py).
- the **running slot** in the project's running hash (store/running.py): what ``max_parallel``
  is counted against, reserved before the rename and confirmed after it (see below).

Giving back always moves the file first and then drops the record and the slot, so a
crash in between leaves a file whose record still names its last owner (recovery's case),
never a pending file that someone else may claim while our record says it is ours.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

import redis

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.core.taskfile import Task, is_safe_segment
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.inbox.files import move_no_replace
from dispatcher.inbox.fsio import flock_held, with_suffix
from dispatcher.store import locks, owners, running

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

def drop_slot(r: redis.Redis, project: str, task_id: str, owner: str | None) -> None:
    """After the file left ``.launching``/``.dispatched``: ``owner``'s record (if named) becomes a released stone
    and its running slot is freed, in one round trip. Always after the move: a crash in between leaves an
    entry without a running file (pruned when it matters), never a running file without an entry."""
    if not owner:
        return  # nothing to drop by name: an unknown owner's slot is pruned (store/running.py)
    pipe = r.pipeline(transaction=False)
    owners.queue_drop(pipe, project, task_id, owner)
    running.queue_drop(pipe, project, task_id, owner)
    pipe.execute()


def give_back(r: redis.Redis, path: Path, project: str, task_id: str, owner: str | None) -> Path:
    """A claimed or dispatched task back to pending; ``owner``'s record (if named) becomes a released stone."""
    pending = release(path)
    drop_slot(r, project, task_id, owner)
    return pending


def fail_owned(r: redis.Redis, path: Path, project: str, task_id: str, owner: str, reason: str) -> Path:
    """A claimed or dispatched task to ``.failed`` (with its reason); ``owner``'s record is dropped."""
    failed = fail(path, reason)
    drop_slot(r, project, task_id, owner)
    return failed


def adopt(r: redis.Redis, launching: Path, project: str, task_id: str, owner: str) -> Path:
    """An abandoned launch the agent in ``owner`` did receive: ``.dispatched``, recorded as ``owner``'s."""
    dispatched = promote(launching)
    owners.take(r, project, task_id, owner)
    running.set_owner(r, project, task_id, owner)  # a dead claimer's reservation becomes the owner's entry
    return dispatched


# -- a dispatched task's end, as its session's monitor decides it ------------------------------------------------
# The agent works on the file itself (it moves it to done/, sometimes copies it), so a move that fails here is
# logged, not raised: the monitor frees the session either way, and the owner record goes with it.

def finished(r: redis.Redis, project: str, task_id: str, owner: str) -> None:
    """The agent moved its task to done/: the owner record becomes a released stone, its slot is free."""
    drop_slot(r, project, task_id, owner)


def requeue_dispatched(r: redis.Redis, proj: aq.Project, task_id: str, owner: str) -> None:
    """The agent ended without finishing: ``.dispatched`` back to pending for another attempt."""
    try:
        move_no_replace(proj.task_path(task_id, d.DISPATCHED), proj.task_path(task_id))
    except ClaimError as exc:
        logger.warning("cannot requeue %s:%s: %s", proj.name, task_id, exc)
    drop_slot(r, proj.name, task_id, owner)


def fail_dispatched(r: redis.Redis, proj: aq.Project, task_id: str, owner: str, note: str) -> None:
    """The task failed: ``.dispatched`` → ``.failed`` with ``note`` beside it."""
    try:
        fail(proj.task_path(task_id, d.DISPATCHED), note)
    except ClaimError as exc:
        logger.warning("cannot mark %s:%s failed: %s", proj.name, task_id, exc)
    drop_slot(r, proj.name, task_id, owner)


def undo_done(r: redis.Redis, proj: aq.Project, task_id: str, owner: str) -> None:
    """done/ must not claim what is not on the base branch (a worktree merge failed): back to ``.dispatched``.

    Counted again before the move (an entry without a file is pruned; a file without an entry could be
    exceeded): not a claim, so not against the limit — it is failed right after.
    """
    running.set_owner(r, proj.name, task_id, owner)
    try:
        move_no_replace(aq.done_path(proj, task_id), proj.task_path(task_id, d.DISPATCHED))
    except ClaimError as exc:
        logger.warning("cannot take %s:%s back from done/: %s", proj.name, task_id, exc)


# -- taking a task ----------------------------------------------------------------------------------------------

# The running count (``max_parallel``) is kept in Redis (store/running.py), not counted by listing the inbox
# at each claim (a listing grows with the queue). Why it can neither let a project exceed its limit nor block
# it for good — after a kill -9 between any two steps, or a FLUSHALL — is argued in docs/decisions.md,
# "Running count without a listing". In short:
#   reserve (atomic: count < limit → a timed reservation) → rename → confirm (atomic: the reservation is still
#   ours, else the others still leave room) → only then is the file ours to launch.
# - Every member leaves the set only after its file left the running states (give back, fail, finish: move
#   first), or by a prune that saw no running file and compares the score it read: the set never misses a
#   confirmed claim whose file still runs, except after a loss of the whole key (flush, eviction), which
#   takes the sentinel with it, and a lost set is rebuilt from a listing made after the loss was seen.
# - A claimer killed between reserve and rename leaves a reservation without a file: the next claimer that
#   finds the project full prunes it once it is older than RUNNING_RESERVATION_GRACE_S (a younger one may
#   be a live claimer about to rename). A live claimer slower than that finds its reservation gone at its
#   confirm and counts again among the others, so pruning it early costs a retry, never a second slot.
# - Killed between rename and confirm: the file is ``.launching`` and its member (reserved) counts it, as the
#   listing did; recovery gives the abandoned launch back, and the member goes with it or by the prune.
# - Confirmed members whose file went away without a drop (killed between the move and the drop, the agent
#   moved it to done/ before the monitor saw it) are pruned the same way by a claimer that finds the
#   project full; a file that runs without a member (moved by hand) is added back by the scan.

_CLAIM_TRIES = 4  # reserve → rebuild / prune → reserve again: a few rounds settle any race


def running_count(r: redis.Redis, settings: Settings, project: str) -> int:
    """Tasks of ``project`` claimed or running now, as the running hash counts them (rebuilt first if lost)."""
    found = running.entries(r, project)
    if found is None:
        running.rebuild(r, project, aq.running_ids(aq.project(settings.projects_dir, project)))
        found = running.entries(r, project) or {}
    return len(found)


def _prune_stale(r: redis.Redis, settings: Settings, project: str, full: running.Reserve) -> int:
    """Drop the entries of a full project whose file does not run (a reservation only once past its grace)."""
    proj = aq.project(settings.projects_dir, project)
    grace_ms = d.RUNNING_RESERVATION_GRACE_S * 1000
    stale = []
    for task_id, value in full.entries:
        if not is_safe_segment(task_id):
            stale.append((task_id, value))  # not a task id we ever write: junk
            continue
        at = running.reserved_at(value)
        if at is not None and full.now_ms - at < grace_ms:
            continue  # its claimer may be between its reserve and its rename
        if not aq.runs(proj, task_id):
            stale.append((task_id, value))
    if not stale:
        return 0
    logger.info("running set of %s: stale entries pruned: %s", project, ", ".join(f"{t}={v}" for t, v in stale))
    return running.prune(r, project, stale)


def _reserve(r: redis.Redis, settings: Settings, task: Task, limit: int, owner: str) -> str | None:
    """A reservation token for ``task``'s slot; None when its project is full (after pruning what is stale).

    ClaimError when the task itself has a live entry: it runs, or another worker is claiming it.
    """
    proj = aq.project(settings.projects_dir, task.project)
    for _ in range(_CLAIM_TRIES):
        got = running.reserve(r, task.project, task.id, limit, owner)
        if got.status == "ok":
            return got.token
        if got.status == "rebuild":
            running.rebuild(r, task.project, aq.running_ids(proj))  # listed after the loss was seen
            continue
        if _prune_stale(r, settings, task.project, got):
            continue
        if any(t == task.id for t, _ in got.entries):
            raise ClaimError(f"{task.key} is running or being claimed by another worker")
        return None
    return None


def _confirm(r: redis.Redis, settings: Settings, task: Task, owner: str, launching: Path, token: str,
             limit: int) -> bool:
    """Make the renamed claim final (and record ``owner``) in one round trip; False: it was given back."""
    proj = aq.project(settings.projects_dir, task.project)
    for _ in range(_CLAIM_TRIES):
        pipe = r.pipeline(transaction=False)
        running.queue_confirm(pipe, task.project, task.id, token, limit, owner)
        owners.queue_take(pipe, task.project, task.id, owner)  # ours from now on (if full: released below)
        status = pipe.execute()[0]
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "ok":
            return True
        if status != "rebuild":
            break
        running.rebuild(r, task.project, aq.running_ids(proj))  # lists our renamed file too
    logger.info("%s: project %s filled its %d slot(s) while this claim renamed; given back", task.key,
                task.project, limit)
    give_back(r, launching, task.project, task.id, owner)
    return False


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
    """Claim ``task`` for session ``owner`` (``HOST/NAME``): slot, rename, owner record, flock.

    None when its project has no free slot (``max_parallel``); ClaimError when another worker has it (or it
    vanished). The slot is kept in the running set whatever the limit (0: none), so a limit set later counts.
    """
    limit = settings.limit_for(task.project)
    token = _reserve(r, settings, task, limit, owner)
    if token is None:
        return None
    try:
        launching = claim(task.path)
    except ClaimError:
        running.unreserve(r, task.project, task.id, token)
        raise
    # Ownership any host can check (an flock proves nothing across machines), with the slot's confirm.
    if not _confirm(r, settings, task, owner, launching, token, limit):
        return None
    try:
        flock = FileClaim(launching)
    except OSError as exc:  # vanished or swapped between claim and lock
        logger.warning("cannot lock %s: %s", launching, exc)
        raise ClaimError(str(exc)) from exc
    return Claim(r, task, owner, launching, flock)
