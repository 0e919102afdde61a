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
        return d.PRIORITIES.index(self.value)


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


@dataclass(frozen=True, order=True)
class DepRef:
    """A dependency ``project:task_id``; met when ``<project>/.agent-queue/done/<task_id>.md`` exists."""

    project: str
    task_id: str

    def __str__(self) -> str:
        return f"{self.project}:{self.task_id}"

    @classmethod
    def parse(cls, text: str, default_project: str) -> "DepRef":
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


@dataclass(frozen=True)
class Task:
    """One pending task file, validated. Immutable."""

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


def _too_deep(line: int) -> TaskFileError:
    """The error for frontmatter nested beyond the limit (``line`` 0-based inside the block)."""
    return TaskFileError(f"invalid YAML frontmatter: nested more than {d.MAX_FRONTMATTER_DEPTH} levels deep "
                         "(lists/mappings inside each other): flatten it", line=line + 2)


class _UniqueKeys:
    """Refuses a mapping that names a key twice."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # PyYAML keeps the last of two equal keys: "depends_on: [A]" then "depends_on: []"
        # would silently mean "no dependencies". Fail closed instead.
        seen: set[str] = set()
        for key_node, _ in getattr(node, "value", ()):
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise TaskFileError(f"key '{key_node.value}' appears twice in the frontmatter: keep one",
                                        line=key_node.start_mark.line + 2)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)  # type: ignore[misc]


class _NoAliasLoader(_UniqueKeys, yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (no billion-laughs expansion) and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # Scanner level: PyYAML's bookkeeping per open '[' / '{' makes deep flow nesting quadratic
        # (5,000 levels in 10 KiB cost ~0.5 s of CPU), so stop at the limit before any of it.
        if self.flow_level >= d.MAX_FRONTMATTER_DEPTH:
            raise _too_deep(self.line)
        super().fetch_flow_collection_start(token_class)  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise TaskFileError(
                "YAML anchors/aliases (&name, *name) are not allowed in task frontmatter",
                line=event.start_mark.line + 2,
            )
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        # Block nesting (indentation, "- - - x") is cheap to scan but is refused at the same depth.
        self._depth += 1
        try:
            if self._depth > d.MAX_FRONTMATTER_DEPTH:
                raise _too_deep(event.start_mark.line if event.start_mark is not None else -1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

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
    lines = text.split("\n")
    if not lines or not _FENCE.match(lines[0]):
        return None, text.strip()
    for i in range(1, len(lines)):
        if _FENCE.match(lines[i]):
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1:]).strip()
    raise TaskIncomplete("frontmatter starts with '---' but has no closing '---' line (still being written?)")


def _load_yaml(block: str) -> dict[str, Any]:
    if len(block.encode("utf-8")) > d.MAX_FRONTMATTER_BYTES:
        raise TaskFileError(f"frontmatter is larger than {d.MAX_FRONTMATTER_BYTES} bytes")
    try:
        data = yaml.load(block, Loader=_NoAliasLoader)  # noqa: S506 - safe loader subclass
    except TaskFileError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        # PyYAML says "found character '\t' that cannot start any token": it never says "tab".
        tab = "\t" in block and ("tab" in problem.lower() or repr("\t") in problem)
        hint = " (YAML forbids tabs for indentation: use spaces)" if tab else ""
        raise TaskFileError(
            f"invalid YAML frontmatter: {problem}{hint}",
            line=(mark.line + 2) if mark is not None else None,  # +1 for 1-based, +1 for the opening ---
        ) from None
    except RecursionError:
        # The composer recurses once per nesting level: [[[[… within 16 KiB is enough.
        raise TaskFileError("invalid YAML frontmatter: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # SafeLoader's constructors raise these on odd scalars (a: 2026-13-45, !!int 0x, 5000-digit ints).
        raise TaskFileError(
            f"invalid YAML frontmatter: a value cannot be read ({str(exc)[:200]}): put it in quotes"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TaskFileError(f"frontmatter must be a mapping of keys (title: …), got {type(data).__name__}")
    return data


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


def parse_task(data: bytes, *, task_id: str, project: str, path: Path, mtime: float = 0.0) -> Task:
    """Parse the bytes of ``<task_id>.md`` into a Task; raise TaskFileError/TaskIncomplete."""
    check_segment(task_id, "task id")
    check_segment(project, "project name")
    if not data.strip():
        raise TaskIncomplete("file is empty (still being written?)")
    front, body = split_frontmatter(_decode(data))
    meta = _load_yaml(front) if front is not None else {}
    warnings = tuple(f"unknown key '{k}' ignored" for k in meta if k not in KNOWN_KEYS)
    title = _as_text(_given(meta, "title", ""), "title")
    raw_prio = _given(meta, "priority", d.DEFAULT_PRIORITY)
    prio_text = _as_text(raw_prio, "priority").strip().lower()
    try:
        priority = Priority(prio_text)
    except ValueError:
        raise TaskFileError(f"unknown priority {raw_prio!r}: use one of {', '.join(d.PRIORITIES)}") from None
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
        body=body,
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
