"""Integration fixtures (agent driver fixtures live in conftest_driver.py)."""

from conftest_driver import fake_log, make_agent, project, rdb, tmux  # noqa: F401
