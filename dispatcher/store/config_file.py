"""Loading the configuration: which file, its YAML, the environment and this machine's name.

The validation itself is pure (:func:`dispatcher.core.config.from_mapping`); this module
is the I/O around it. It lives with the adapters, not in an entry point, because a
worker process builds its settings lazily in ``flows/runtime.py``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import yaml

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings, from_mapping, host_name_from
from dispatcher.core.errors import ConfigError


def default_host_name() -> str:
    """This machine's host name, reduced to the characters a host name may hold."""
    return host_name_from(socket.gethostname())


def find_config_path(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to use: explicit path, else $DISPATCHER_CONFIG, else ./dispatcher.yaml if present."""
    env = os.environ if env is None else env
    if path:
        return Path(path)
    if env.get(d.CONFIG_ENV):
        return Path(env[d.CONFIG_ENV])
    local = Path.cwd() / d.CONFIG_FILE
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the configuration; without a file, defaults relative to the cwd."""
    env = os.environ if env is None else env
    host = default_host_name()
    found = find_config_path(path, env)
    if found is None:
        return from_mapping({}, base=Path.cwd(), where="<defaults>", env=env, host_name=host)
    try:
        text = found.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{found}: config file not found (create one with 'dispatcher init')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{found}: cannot read config: {exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{found}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # odd scalars: a: 2026-13-45
        raise ConfigError(f"{found}: invalid YAML: a value cannot be read ({exc}): put it in quotes") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{found}: top level must be a mapping of keys, got {type(data).__name__}")
    base = found.resolve().parent
    return replace(from_mapping(data, base=base, where=str(found), env=env, host_name=host), source=found.resolve())
