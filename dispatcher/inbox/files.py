"""On-disk protocol (design Â§2): projects, inbox listings and the atomic move primitive.

Every ownership change is one atomic directory operation (:func:`move_no_replace`)
followed by an fsync of the directory, so a crash leaves each task in exactly one
recognisable state. Which moves a task makes (claim, release, promote, fail, retry)
is flows/claim.py's business.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.errors import ClaimError
from dispatcher.core.listing import Entry, Project, ProjectListing
from dispatcher.core.taskfile import check_segment, is_safe_segment
from dispatcher.inbox.fsio import fsync_dir

logger = logging.getLogger(__name__)


def project(projects_dir: Path, name: str) -> Project:
    """The project ``name`` under ``projects_dir`` (name validated, nothing touched on disk)."""
    return Project(check_segment(name, "project name"), projects_dir / name)


def discover_projects(projects_dir: Path, names: Iterable[str] | None = None) -> list[Project]:
    """Projects to serve: the configured names, or every dir under projects_dir with .agent-queue/."""
    if names is not None:
        return [project(projects_dir, n) for n in names]
    try:
        entries = sorted(os.scandir(projects_dir), key=lambda e: e.name)
    except FileNotFoundError:
        logger.warning("projects_dir %s does not exist", projects_dir)
        return []
    found = []
    for entry in entries:
        if not is_safe_segment(entry.name) or not entry.is_dir(follow_symlinks=True):
            continue
        if os.path.isdir(os.path.join(entry.path, d.QUEUE_DIR)):
            found.append(Project(entry.name, Path(entry.path)))
    return found


def ensure_dirs(proj: Project) -> None:
    """Create inbox/ and done/ if missing."""
    proj.inbox.mkdir(parents=True, exist_ok=True)
    proj.done.mkdir(parents=True, exist_ok=True)


def _list(path: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_project(proj: Project) -> ProjectListing:
    """List inbox/ (with lstat data) and done/ (regular files) once."""
    inbox: dict[str, Entry] = {}
    for e in _list(proj.inbox):
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        inbox[e.name] = Entry(e.name, st.st_mtime, st.st_size, stat.S_ISREG(st.st_mode), st.st_ino,
                              st.st_mtime_ns, st.st_ctime_ns)
    return ProjectListing(proj, inbox, done_names(proj))


def running_ids(proj: Project) -> list[str]:
    """Ids of the tasks whose files run now (``.launching`` or ``.dispatched``): one listing of the inbox."""
    try:
        names = os.listdir(proj.inbox)
    except OSError:
        return []
    out = []
    for end in (d.TASK_SUFFIX + d.LAUNCHING, d.TASK_SUFFIX + d.DISPATCHED):
        out += [n[: -len(end)] for n in names if n.endswith(end) and not n.startswith(".")]
    return out


def runs(proj: Project, task_id: str) -> bool:
    """True when ``task_id``'s file is ``.launching`` or ``.dispatched`` now (two ``lstat``s, no listing)."""
    for state in (d.LAUNCHING, d.DISPATCHED):
        try:
            os.lstat(proj.task_path(task_id, state))
            return True
        except FileNotFoundError:
            continue
    return False


def done_names(proj: Project) -> tuple[str, ...]:
    """Names of the finished tasks in done/: regular ``*.md`` files only (a symlink or directory is not one)."""
    out = []
    for e in _list(proj.done):
        try:
            if e.name.endswith(d.TASK_SUFFIX) and e.is_file(follow_symlinks=False):
                out.append(e.name)
        except OSError:  # vanished while listed
            continue
    return tuple(out)


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """renameat2(RENAME_NOREPLACE); False where the kernel or filesystem does not support it."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src))


def move_no_replace(src: Path, dst: Path) -> None:
    """Atomically move ``src`` to ``dst``; fail if ``dst`` exists or ``src`` is gone.

    ``renameat2(RENAME_NOREPLACE)`` is one atomic step: of two racing movers
    exactly one wins, and a file that replaces ``src`` meanwhile is never
    touched. Where it is unsupported, a hard link (which also refuses to
    overwrite) then an unlink; last, a checked rename.
    """
    try:
        done = _rename_noreplace(src, dst)
    except FileExistsError:
        raise ClaimError(f"{dst.name} already exists") from None
    except FileNotFoundError:
        raise ClaimError(f"{src.name} is gone (taken by another worker or removed)") from None
    except OSError as exc:
        raise ClaimError(f"cannot move {src.name} to {dst.name}: {exc.strerror}") from None
    if done:
        fsync_dir(dst.parent)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise ClaimError(f"{dst.name} already exists") from None
    except FileNotFoundError:
        raise ClaimError(f"{src.name} is gone (taken by another worker or removed)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP):
            raise ClaimError(f"cannot move {src.name} to {dst.name}: {exc.strerror}") from None
        if dst.exists():
            raise ClaimError(f"{dst.name} already exists") from None
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            raise ClaimError(f"{src.name} is gone (taken by another worker or removed)") from None
    else:
        try:
            os.unlink(src)
        except FileNotFoundError:
            pass
    fsync_dir(dst.parent)




def done_path(proj: Project, task_id: str) -> Path:
    return proj.done / (check_segment(task_id, "task id") + d.TASK_SUFFIX)


def complete(path: Path, proj: Project, task_id: str) -> Path:
    """Move a dispatched task to done/ (the dispatcher confirmed completion)."""
    dst = done_path(proj, task_id)
    proj.done.mkdir(parents=True, exist_ok=True)
    move_no_replace(path, dst)
    return dst


def write_task_atomically(proj: Project, task_id: str, text: str) -> Path:
    """Create ``inbox/<id>.md`` atomically (temp name not ending in .md, fsync, no-replace move)."""
    dst = proj.task_path(task_id)  # UnsafeIdError for an ID that is not a safe file name
    proj.inbox.mkdir(parents=True, exist_ok=True)
    tmp = proj.inbox / f".{task_id}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        move_no_replace(tmp, dst)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return dst
