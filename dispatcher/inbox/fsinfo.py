"""What kind of filesystem holds the projects: inotify sees no writes made by another machine on a network one."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

#: Filesystem types (as /proc/mounts names them) shared over a network: the watcher polls there.
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
                        "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "beegfs", "gpfs", "ocfs2"})


def _unescape(field: str) -> str:
    # /proc/mounts writes spaces, tabs, newlines and backslashes in octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def fs_type(path: str, mounts: str) -> str:
    """The filesystem type of ``path`` from the text of /proc/mounts (the longest mount point above it)."""
    best, kind = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape(parts[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def is_network(path: str | os.PathLike[str], mounts_file: str = "/proc/mounts") -> bool:
    """True when ``path`` lives on a network filesystem (False when that cannot be told)."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as fh:
            mounts = fh.read()
    except OSError:
        return False
    return fs_type(os.path.realpath(path), mounts) in NETWORK_FS
