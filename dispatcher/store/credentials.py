"""Basic-auth credentials for the operator's web views (fleet page, Flower): never open without them.

``FLOWER_BASIC_AUTH=user:password`` (or ``flower.basic_auth``) wins; otherwise a
password is generated once into ``<state_dir>/web-auth`` (mode 0600) and reused,
so a bookmarked page keeps working across restarts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.errors import ConfigError

logger = logging.getLogger(__name__)

AUTH_FILE = d.FLOWER_AUTH_FILE
DEFAULT_USER = "admin"


def parse(value: str, where: str) -> tuple[str, str]:
    """``user:password`` → (user, password); both must be non-empty."""
    user, sep, password = value.strip().partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"{where}: basic auth must be 'user:password' (both non-empty)")
    return user, password


def path(state_dir: Path) -> Path:
    """Where the generated credentials live."""
    return Path(state_dir) / AUTH_FILE


def load_or_create(state_dir: Path, configured: str | None = None) -> tuple[str, str]:
    """The (user, password) to require: ``configured`` if given, else the generated file (created once, 0600)."""
    if configured:
        return parse(configured, "FLOWER_BASIC_AUTH")
    target = path(state_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(target):
        _create(target, f"{DEFAULT_USER}:{secrets.token_urlsafe(18)}")
    if target.is_symlink() or not target.is_file():
        raise ConfigError(f"{target}: not a regular file; remove it to generate new credentials")
    mode = target.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(target, 0o600)  # a password others may read is no password
        logger.warning("%s was mode %o; now 0600", target, mode)
    return parse(target.read_text(encoding="utf-8"), str(target))


def _create(target: Path, value: str) -> None:
    """Publish ``value`` at ``target`` whole, unless someone else already did.

    The web page and Flower start together: creating the file in place (O_EXCL, then write) let the
    loser of the race read it empty. A private temp file linked into place appears complete or not
    at all, and ``link`` fails rather than replace a file another process published first.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return  # another process won; its file is read by the caller
        logger.warning("generated web credentials in %s (user %s)", target, DEFAULT_USER)
    finally:
        os.unlink(tmp)


def check_header(header: str | None, user: str, password: str) -> bool:
    """True when an ``Authorization: Basic …`` header carries exactly these credentials (constant time)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    got_user, sep, got_password = given.partition(":")
    ok_user = hmac.compare_digest(got_user.encode(), user.encode())
    ok_password = hmac.compare_digest(got_password.encode(), password.encode())
    return bool(sep) and ok_user and ok_password
