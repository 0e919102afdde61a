"""Durations for people: ``45s``, ``3m12s``, ``2h05m``, ``4d03h`` (the fleet page's app.js says the same)."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """``seconds`` in two units at most; ``-`` when unknown, ``∞`` when open-ended."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if math.isinf(seconds):
        return "∞"
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"
