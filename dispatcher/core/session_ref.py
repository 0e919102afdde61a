"""How a pool session is named across a fleet: ``HOST/NAME`` (``ccl-auto-0`` alone on one host).

A tmux session name is unique on its own host only; everything shared (Redis
keys, hook streams, events, Celery messages) names a session by its ref.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.core.errors import SessionError
from dispatcher.core.taskfile import is_safe_segment

SEP = "/"


def check_host_name(name: str) -> str:
    """A host name as config and refs accept it (letters, digits, ``._-``; not ``.``/``..``)."""
    if not isinstance(name, str) or not is_safe_segment(name):
        raise SessionError(f"host name {name!r} must match [A-Za-z0-9._-]+")
    return name


@dataclass(frozen=True, order=True)
class SessionRef:
    """One pool session of one host."""

    host: str
    name: str

    def __str__(self) -> str:
        return f"{self.host}{SEP}{self.name}"


def parse(text: object, *, default_host: str) -> SessionRef:
    """``HOST/NAME`` or a bare ``NAME`` (on ``default_host``); SessionError when malformed."""
    if not isinstance(text, str):
        raise SessionError(f"a session is named by a string, got {type(text).__name__}")
    host, sep, name = text.partition(SEP)
    if not sep:
        host, name = default_host, text
    check_host_name(host)
    if not is_safe_segment(name):
        raise SessionError(f"session name {name!r} must match [A-Za-z0-9._-]+ (form: HOST/NAME or NAME)")
    return SessionRef(host, name)


def is_qualified(text: str) -> bool:
    """True when ``text`` names its host (``HOST/NAME``)."""
    return SEP in text
