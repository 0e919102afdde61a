"""Test helpers shipped with the package (the fake agent is used by tests, benchmarks and docker)."""

from __future__ import annotations

import sys

#: ``agent.command`` that runs the fake agent with this interpreter (tests, benchmarks).
FAKE_AGENT_COMMAND = (f"{sys.executable} -m dispatcher.testing.fake_agent "
                      "--model {model} --dangerously-skip-permissions {resume}")
