"""Durations as people read them (status, the fleet page, up's view)."""

from __future__ import annotations

import math

import pytest

from dispatcher.core.humanize import duration


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0, "0s"), (-5, "0s"), (59.9, "59s"), (60, "1m00s"),
                                           (192, "3m12s"), (3600, "1h00m"), (7500, "2h05m"), (86400, "1d00h"),
                                           (4 * 86400 + 3 * 3600 + 59, "4d03h"), (math.inf, "∞")])
def test_duration(seconds, text):
    assert duration(seconds) == text
