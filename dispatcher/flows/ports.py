"""The adapters a use case works through, built once per process (flows/runtime.py).

Dispatch, recovery and resume take ``Ports`` instead of the whole ``Dispatcher``:
what they may touch is visible in their signature, and tests build one directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.flows.launch import LaunchFn


@dataclass(frozen=True)
class Ports:
    """Settings plus the Redis, tmux, launcher and clock of this process."""

    settings: Settings
    r: redis.Redis
    tmux: Tmux
    launch: LaunchFn
    clock: Callable[[], float] = field(default=time.time)

    @property
    def host(self) -> str:
        """This host's name (sessions here are ``HOST/NAME``)."""
        return self.settings.host.name
