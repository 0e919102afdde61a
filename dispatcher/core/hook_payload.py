"""What is kept of a hook's payload: Claude Code's JSON on the hook's stdin, or anything (it is outside input).

Both hook clients' entries are read through :func:`parse_payload` (store/hook_log.py): the Python hook
(dispatcher/hook.py) stores its result, the bash one (dispatcher/hook.sh) the raw stdin.
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.core.defaults import HOOK_MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES

#: How much of an unparseable payload is kept (as ``{"raw": …}``).
RAW_KEPT_CHARS = 4096


def parse_payload(raw: str) -> dict[str, Any]:
    """A hook's stdin (Claude Code's JSON, or anything: it is outside input) as the payload dict to keep.

    The same rules for both hook clients. Anything but a JSON
    object becomes ``{"raw": <its first 4096 characters>}``; a long prompt is cut to half the payload
    cap (its start holds the delivery tag) and flagged ``prompt_truncated``; a payload still over the
    cap becomes ``{"raw": <first 4096 characters of its JSON>, "truncated": True}``.
    """
    raw = raw[: 4 * MAX_PAYLOAD_BYTES]  # what the Python hook reads of stdin; the bash one sends no more
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: a hostile '[[[[…' nests deeper than json can
        return {"raw": raw[:RAW_KEPT_CHARS]}
    if not isinstance(data, dict):
        return {"raw": raw[:RAW_KEPT_CHARS]}
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > MAX_PAYLOAD_BYTES // 2:
        data["prompt"] = prompt[: MAX_PAYLOAD_BYTES // 2]
        data["prompt_truncated"] = True
    # Re-encoding grows a payload by at most 1.5× (the ", " and ": " separators), so only a long one can
    # exceed the cap: short ones (every payload in practice) are not encoded again on each read.
    if len(raw) > MAX_PAYLOAD_BYTES // 2:
        body = json.dumps(data, ensure_ascii=False)
        if len(body) > MAX_PAYLOAD_BYTES:
            return {"raw": body[:RAW_KEPT_CHARS], "truncated": True}
    return data
