"""Each piece of shared state has one owner module: everyone else goes through it (read from the source, no mocks)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Redis key builders (``keys.X``) and the only modules that may use them.
KEY_OWNERS = {
    "pause": {"store/pause.py"}, "PAUSE": {"store/pause.py"}, "HOLDS": {"store/pause.py"},
    "rate_limit_streak": {"store/pause.py"}, "RATE_LIMIT_STREAK": {"store/pause.py"},
    "session_state": {"store/sessions.py"},
    "session_lock": {"store/locks.py"},
    "session_hooks": {"store/hook_log.py", "hook.py"},
}
#: Writes of the Redis session record: only the session store calls them (it writes the tmux copy too).
SESSION_WRITES = {"put", "transition", "update", "set_idle"}
SESSION_WRITER = "agent/pool_state.py"


def _modules() -> list[tuple[str, ast.Module]]:
    files = sorted((ROOT / "dispatcher").rglob("*.py")) + sorted((ROOT / "workers").rglob("*.py"))
    return [(str(p.relative_to(ROOT / "dispatcher")) if p.is_relative_to(ROOT / "dispatcher") else str(p),
             ast.parse(p.read_text(encoding="utf-8"))) for p in files]


def _session_aliases(tree: ast.Module) -> set[str]:
    """Names a module binds to ``dispatcher.store.sessions``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "dispatcher.store":
            names |= {a.asname or a.name for a in node.names if a.name == "sessions"}
    return names


def test_redis_keys_of_sessions_and_pause_are_used_by_their_owner_only() -> None:
    found = [(mod, node.attr) for mod, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "keys"
             and node.attr in KEY_OWNERS and mod not in KEY_OWNERS[node.attr]]
    assert found == []


def test_only_the_session_store_writes_session_state() -> None:
    found = []
    for mod, tree in _modules():
        if mod in (SESSION_WRITER, "store/sessions.py"):
            continue
        aliases = _session_aliases(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr in SESSION_WRITES):
                found.append((mod, node.attr))
            if isinstance(node, ast.ImportFrom) and node.module == "dispatcher.store.sessions":
                found += [(mod, a.name) for a in node.names if a.name in SESSION_WRITES]
    assert found == []


def test_every_tmux_command_is_built_in_the_adapter() -> None:
    """``Tmux.run`` with argv of one's own is for agent/tmux.py alone (it keeps every byte sent visible)."""
    found = [(mod, node.lineno) for mod, tree in _modules() if mod != "agent/tmux.py" for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
             and isinstance(node.func.value, (ast.Name, ast.Attribute))
             and (node.func.value.id if isinstance(node.func.value, ast.Name) else node.func.value.attr) == "tmux"]
    assert found == []
