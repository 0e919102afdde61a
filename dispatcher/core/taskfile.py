"""Task files: parse ``<id>.md`` (optional YAML frontmatter + Markdown body) into a Task.

Pure parsing over bytes (:func:`parse_task`); reading the file (no symlinks, no
FIFOs, size caps) is the inbox adapter's job (:mod:`dispatcher.inbox.reader`).
Anything wrong raises :class:`TaskFileError` with a reason a human can act on;
frontmatter that fails to parse never means "no dependencies" (fail closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError, TaskIncomplete, UnsafeIdError
from dispatcher.core.frontmatter import load_frontmatter

_SAFE = re.compile(r"^[A-Za-z0-9._-]+\Z")  # \Z: "$" would accept a trailing newline
_FENCE = re.compile(r"^---[ \t]*$")
_YAML_BREAKS = "\x85\u2028\u2029"  # line breaks for YAML, not for Python's "\n" split
KNOWN_KEYS = frozenset({"title", "priority", "tags", "needs_claude_code", "depends_on"})


class Priority(str, Enum):
    """Task priority; the rank orders dispatch (critical first)."""

    CRITICAL = "critical"
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _RANK[self.value]


#: Priority by its text: a dict lookup costs a fraction of ``Priority(text)`` (once per file in a cold scan).
_PRIORITY_OF = {p.value: p for p in Priority}
_RANK = {text: i for i, text in enumerate(d.PRIORITIES)}


def is_safe_segment(value: str) -> bool:
    """True for a project name or task ID that cannot escape its directory (reference rule)."""
    return bool(_SAFE.match(value)) and value not in (".", "..")


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if safe, else raise UnsafeIdError explaining the rule."""
    if not isinstance(value, str) or not is_safe_segment(value):
        raise UnsafeIdError(
            f"{what} {value!r} is not allowed: use only letters, digits, '.', '_' and '-' (not '.' or '..')"
        )
    return value


@dataclass(frozen=True, order=True, slots=True)
class DepRef:
    """A dependency ``project:task_id``; met when ``<project>/.agent-queue/done/<task_id>.md`` exists."""

    project: str
    task_id: str

    def __str__(self) -> str:
        return f"{self.project}:{self.task_id}"

    @classmethod
    def parse(cls, text: str, default_project: str) -> DepRef:
        """Parse ``"p:t"`` or a bare ``"t"`` (same project); validate both segments before any disk access."""
        raw = text.strip()
        if not raw:
            raise UnsafeIdError("depends_on has an empty entry")
        project, sep, task_id = raw.partition(":")
        if not sep:
            project, task_id = default_project, raw
        check_segment(project, f"depends_on {raw!r}: project")
        check_segment(task_id, f"depends_on {raw!r}: task id")
        return cls(project, task_id)


@dataclass(frozen=True, slots=True)
class Task:
    """One pending task file, validated. Immutable (slots: a worker keeps one per pending task)."""

    id: str
    project: str
    path: Path
    title: str = ""
    priority: Priority = Priority.DEFAULT
    tags: tuple[str, ...] = ()
    needs_claude_code: bool = False
    depends_on: tuple[DepRef, ...] = ()
    body: str = ""
    mtime: float = 0.0
    warnings: tuple[str, ...] = field(default=(), compare=False)
    #: Bytes of the file as read (with mtime: did it change since it was scanned?).
    size: int = field(default=0, compare=False)

    @property
    def key(self) -> DepRef:
        """This task as a dependency reference (``project:id``)."""
        return DepRef(self.project, self.id)

    @property
    def file_name(self) -> str:
        return self.id + d.TASK_SUFFIX


def task_id_from_name(name: str) -> str:
    """The task ID of an inbox file name ``<id>.md``, validated."""
    if not name.endswith(d.TASK_SUFFIX):
        raise TaskFileError(f"{name!r} is not a task file (must end in .md)")
    return check_segment(name[: -len(d.TASK_SUFFIX)], "task file name")


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise TaskFileError("file contains NUL bytes: binary data is not a task")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(f"not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_frontmatter(text: str) -> tuple[str | None, str]:
    """Split ``---`` frontmatter from the body. Raise TaskIncomplete if the fence is not closed yet."""
    # Only lines starting with "---" can be a fence: find those, not split every line (once per file in a scan).
    first_end = text.find("\n")
    if not _FENCE.match(text if first_end < 0 else text[:first_end]):
        return None, text.strip()
    pos = first_end
    while pos >= 0:
        start = text.find("\n---", pos)
        if start < 0:
            break
        line_end = text.find("\n", start + 1)
        if _FENCE.match(text[start + 1:] if line_end < 0 else text[start + 1:line_end]):
            return text[first_end + 1:start], ("" if line_end < 0 else text[line_end + 1:].strip())
        pos = start + 1
    raise TaskIncomplete("frontmatter starts with '---' but has no closing '---' line (still being written?)")


def _as_text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise TaskFileError(f"'{key}' must be text, got {type(value).__name__} {value!r}: put it in quotes")
    return value


def _parse_depends(value: Any, project: str) -> tuple[DepRef, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise TaskFileError(f"'depends_on' must be a list of \"project:task_id\" strings, got {type(value).__name__}")
    deps: list[DepRef] = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, str):
            raise TaskFileError(
                f"depends_on entry #{n} was read by YAML as {type(item).__name__} {item!r}, not text "
                "(YAML turns unquoted values like 1:30 into numbers): quote it, e.g. - \"project:task_id\""
            )
        deps.append(DepRef.parse(item, project))
    # Keep order, drop duplicates: the gate treats them as one.
    return tuple(dict.fromkeys(deps))


def _given(meta: dict[str, Any], key: str, default: Any) -> Any:
    """The value of ``key``, or ``default`` when absent/empty; never for 0 or false (``priority: 0`` is an error)."""
    value = meta.get(key)
    return default if value is None or value == "" else value


def parse_task(data: bytes, *, task_id: str, project: str, path: Path, mtime: float = 0.0,
               body: bool = True) -> Task:
    """Parse the bytes of ``<task_id>.md`` into a Task; raise TaskFileError/TaskIncomplete.

    ``body=False`` leaves the body empty (a scan's plan never needs it; the claim re-reads the file).
    """
    check_segment(task_id, "task id")
    check_segment(project, "project name")
    if not data or data.isspace():  # no stripped copy of every file
        raise TaskIncomplete("file is empty (still being written?)")
    front, text = split_frontmatter(_decode(data))
    meta = load_frontmatter(front) if front is not None else {}
    warnings = () if meta.keys() <= KNOWN_KEYS else tuple(
        f"unknown key '{k}' ignored" for k in meta if k not in KNOWN_KEYS)
    title = _as_text(_given(meta, "title", ""), "title")
    raw_prio = _given(meta, "priority", d.DEFAULT_PRIORITY)
    prio_text = _as_text(raw_prio, "priority").strip().lower()
    priority = _PRIORITY_OF.get(prio_text)
    if priority is None:
        raise TaskFileError(f"unknown priority {raw_prio!r}: use one of {', '.join(d.PRIORITIES)}")
    tags_raw = _given(meta, "tags", [])
    tags_list = [tags_raw] if isinstance(tags_raw, str) else tags_raw
    if not isinstance(tags_list, list) or not all(isinstance(t, str) for t in tags_list):
        raise TaskFileError("'tags' must be a list of text values, e.g. tags: [backend, urgent]")
    needs = meta.get("needs_claude_code", False)
    if needs is None:
        needs = False
    if not isinstance(needs, bool):
        raise TaskFileError(f"'needs_claude_code' must be true or false, got {needs!r}")
    return Task(
        id=task_id,
        project=project,
        path=path,
        title=title.strip(),
        priority=priority,
        tags=tuple(tags_list),
        needs_claude_code=needs,
        depends_on=_parse_depends(meta.get("depends_on"), project),
        body=text if body else "",
        mtime=mtime,
        warnings=warnings,
        size=len(data),
    )


def render_task(*, title: str = "", priority: str = d.DEFAULT_PRIORITY, tags: tuple[str, ...] = (),
                depends_on: tuple[str, ...] = (), needs_claude_code: bool | None = None, body: str = "") -> str:
    """Render a task file (used by ``dispatcher submit`` and ``init``); round-trips through parse_task."""
    meta: dict[str, Any] = {}
    if title:
        meta["title"] = title
    meta["priority"] = priority
    if tags:
        meta["tags"] = list(tags)
    if needs_claude_code is not None:
        meta["needs_claude_code"] = needs_claude_code
    if depends_on:
        meta["depends_on"] = list(depends_on)
    # PyYAML writes NEL/LS/PS raw when allow_unicode is on, then reads them back folded into a
    # space: escape everything in that (rare) case so the text round-trips exactly.
    raw_breaks = any(ch in text for text in (title, *tags, *depends_on) for ch in _YAML_BREAKS)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=not raw_breaks, default_flow_style=None)
    return f"---\n{front}---\n\n{body.strip()}\n"
