"""The message typed into an agent: ``[<id>.md] <body>`` + footer, made safe to paste."""

from __future__ import annotations

import logging
import re
import string

logger = logging.getLogger(__name__)

# C0 controls except \t and \n, DEL, and C1 controls (U+0080–U+009F, e.g. the 8-bit CSI U+009B).
# Removing ESC means a body can never close the bracketed paste early with ESC[201~.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def delivery_tag(task_id: str) -> str:
    """The delivery tag at the start of a message; seeing it submitted proves delivery."""
    return f"[{task_id}.md]"


def sanitize(text: str) -> str:
    """Normalise newlines, drop control characters except newline and tab, strip trailing newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).rstrip("\n")


class _KeepUnknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def format_footer(footer: str, *, task_id: str, project: str, queue_dir: str = ".agent-queue") -> str:
    """Fill ``{task_file}``, ``{task_id}``, ``{project}``, ``{queue_dir}`` in the footer; leave other text alone.

    ``queue_dir`` is relative to the agent's cwd when that is the project, absolute when the
    agent works in a worktree (its task file stays in the project's main queue).
    """
    fields = _KeepUnknown(task_file=f"{task_id}.md", task_id=task_id, project=project, queue_dir=queue_dir)
    try:
        return string.Formatter().vformat(footer, (), fields)
    except (ValueError, IndexError, AttributeError, KeyError) as exc:
        # A stray brace in the configured footer must not block dispatch.
        logger.warning("message footer is not a valid format string (%s); sent as is", exc)
        return footer


def build_message(task_id: str, body: str, *, project: str, footer: str, queue_dir: str = ".agent-queue") -> str:
    """The full, sanitised message for one task."""
    text = f"{delivery_tag(task_id)} {body.strip(chr(10) + chr(13))}"
    filled = format_footer(footer, task_id=task_id, project=project, queue_dir=queue_dir)
    if filled.strip():
        text = f"{text.rstrip()}\n\n{filled}"
    return sanitize(text)
