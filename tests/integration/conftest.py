"""Integration fixtures (agent driver fixtures live in conftest_driver.py)."""

from conftest_driver import fake_log, make_agent, project, rdb, tmux  # noqa: F401
from system_fixtures import agent_log, clock, disp, settings, sys_redis, sys_redis_url, tmux_pool  # noqa: F401
