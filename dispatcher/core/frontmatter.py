"""Frontmatter YAML, loaded safely: no anchors or aliases, bounded size and depth, no duplicate keys.

The reference loader is PyYAML's pure-Python SafeLoader with those checks; its answers and
error messages are the spec. Two faster paths give the same answers on the frontmatter they
vouch for and hand everything else to it: a reader of the plain ``key: value`` / ``key: [a, b]``
lines ``render_task`` writes (:func:`_simple_load`), then libyaml (:func:`_fast_load`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError


def _too_deep(line: int) -> TaskFileError:
    """The error for frontmatter nested beyond the limit (``line`` 0-based inside the block)."""
    return TaskFileError(f"invalid YAML frontmatter: nested more than {d.MAX_FRONTMATTER_DEPTH} levels deep "
                         "(lists/mappings inside each other): flatten it", line=line + 2)


class _UniqueKeys:
    """Refuses a mapping that names a key twice (mixed into both loaders)."""

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
    """SafeLoader that refuses anchors and aliases (no billion-laughs expansion) and deep nesting.

    The reference loader (pure Python): every frontmatter the fast loader does not vouch for comes here,
    and its errors are the ones reported.
    """

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

#: Characters that send a block straight to the reference loader: tabs, control characters,
#: YAML-only line breaks and BOMs.
_ODD = re.compile("[\t\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
#: Those, anchors/aliases (& *), and where libyaml is laxer than PyYAML (found by differential
#: fuzzing: '?' in flow scalars and keys, '|' / '>' block scalars with junk after them, '!' empty
#: tags), and the reserved indicators ('%', '@', '`').
_NOT_FOR_LIBYAML = re.compile("[?|>!%@`&*\t\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")

#: What the fast path returns when the reference loader must decide.
_NO_FAST = object()
_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):
    class _CSafeUniqueLoader(_UniqueKeys, yaml.CSafeLoader):  # type: ignore[misc, name-defined]
        """libyaml's scanner and parser (about 10× PyYAML's), the same safe constructor and duplicate-key rule."""

    _FastLoader = _CSafeUniqueLoader


#: ``key: value`` at column 0; the value (if any) follows one or more spaces.
_SIMPLE_LINE = re.compile(r"([A-Za-z][A-Za-z0-9_]*):(?: +(.*))?\Z")
#: A one-line plain scalar in block context that YAML reads as this very text: it starts with a
#: letter (no indicator, no number), has no '#', no ": ", no trailing ':' and single inner spaces.
_SIMPLE_TEXT = re.compile(r"[A-Za-z](?:[^\s#:]|:(?=\S)| (?=\S))*\Z")
#: The same inside ``[...]``: no spaces, and none of ``,?[]{}`` (flow indicators).
_SIMPLE_ITEM = re.compile(r"[A-Za-z](?:[^\s#:,?\[\]{}]|:(?=[^\s,\[\]{}]))*\Z")
#: A single-quoted scalar without a quote inside: YAML reads the text between the quotes as is.
_QUOTED = re.compile(r"'([^']*)'\Z")
#: Plain words YAML 1.1 reads as booleans or null (any case: the simple reader leaves them all to YAML).
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})


def _simple_text(text: str, pattern: re.Pattern[str]) -> str | None:
    """``text`` as YAML reads it when that is certain (plain or single-quoted), else None."""
    if pattern.match(text):
        return text if text.lower() not in _YAML_WORDS else None
    quoted = _QUOTED.match(text)
    return quoted.group(1) if quoted is not None else None


@functools.lru_cache(maxsize=4096)
def _simple_line(line: str) -> tuple[str, Any] | None:
    """One ``key: …`` line as (key, value; a list as a tuple), or None when YAML must read it.

    Pure, so cached: most lines repeat across a queue's files (priority, tags, needs_claude_code).
    """
    m = _SIMPLE_LINE.match(line)
    if m is None:
        return None
    key, value = m.group(1, 2)
    if key.lower() in _YAML_WORDS:
        return None
    if value is None:
        return key, None
    if value[0] == "[":
        if value[-1] != "]":
            return None
        inner = value[1:-1].strip(" ")
        items = tuple(_simple_text(item.strip(" "), _SIMPLE_ITEM) for item in inner.split(",")) if inner else ()
        return None if None in items else (key, items)
    text = _simple_text(value, _SIMPLE_TEXT)
    return None if text is None else (key, text)


def _simple_load(block: str) -> Any:
    """The plain ``key: text`` / ``key: [a, b]`` / ``key:`` lines that ``render_task`` writes, else ``_NO_FAST``.

    Each accepted form is one whose YAML reading is the text itself (the tests check it against
    the reference loader); a line in any other form hands the whole block to YAML.
    """
    out: dict[str, Any] = {}
    for line in block.split("\n"):
        line = line.rstrip(" ")
        if not line:
            continue
        kv = _simple_line(line)
        if kv is None or kv[0] in out:
            return _NO_FAST
        key, value = kv
        out[key] = list(value) if isinstance(value, tuple) else value
    return out or None  # blank lines only: YAML reads no document


def _depth(data: Any) -> int:
    """How deep lists and mappings nest in ``data`` (a scalar: 0)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = list(item.keys()) + list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack += [(c, level + 1) for c in children]
    return deepest


def _fast_load(block: str) -> Any:
    """The frontmatter through libyaml when that is sure to equal the reference loader, else ``_NO_FAST``.

    Only a block without anchors, aliases, tabs or the characters above, with fewer flow brackets than
    the depth limit, goes in; only a result within the depth limit comes out. Anything else
    (an error included) goes to the reference loader, so every refusal reads the same.
    """
    if _FastLoader is None or _NOT_FOR_LIBYAML.search(block) is not None:
        return _NO_FAST
    if block.count("[") + block.count("{") > d.MAX_FRONTMATTER_DEPTH:
        return _NO_FAST
    try:
        data = yaml.load(block, Loader=_FastLoader)  # noqa: S506 - safe loader subclass
    except Exception:  # noqa: BLE001 - the reference loader says what is wrong
        return _NO_FAST
    return data if _depth(data) <= d.MAX_FRONTMATTER_DEPTH else _NO_FAST


def load_frontmatter(block: str) -> dict[str, Any]:
    """The frontmatter block (between the ``---`` fences) as a mapping; raise TaskFileError saying why not."""
    if len(block.encode("utf-8")) > d.MAX_FRONTMATTER_BYTES:
        raise TaskFileError(f"frontmatter is larger than {d.MAX_FRONTMATTER_BYTES} bytes")
    if _ODD.search(block) is None:
        data = _simple_load(block)
        if data is _NO_FAST:
            data = _fast_load(block)
    else:
        data = _NO_FAST
    try:
        if data is _NO_FAST:
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
