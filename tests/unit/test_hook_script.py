"""The bash hook client's constants equal the Python side's, and the payload rules both clients share (no I/O).

dispatcher/hook.sh is run against real Redis in tests/integration/test_hook_client.py.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import hook
from dispatcher.agent.hook_settings import HOOK_PY, HOOK_SCRIPT
from dispatcher.core import defaults, keys
from dispatcher.core.hook_payload import RAW_KEPT_CHARS, parse_payload

MAX = defaults.HOOK_MAX_PAYLOAD_BYTES


def script_constants() -> dict[str, str]:
    text = HOOK_SCRIPT.read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def test_script_constants_equal_the_python_ones() -> None:
    c = script_constants()
    assert c["KEY_PREFIX"] + "S" == keys.session_hooks("S")
    assert int(c["MAXLEN"]) == keys.HOOKS_MAXLEN
    assert int(c["PAYLOAD_CAP"]) == 4 * MAX  # what the Python hook reads of stdin
    assert float(c["REPLY_TIMEOUT_S"]) == defaults.HOOK_SOCKET_TIMEOUT_S
    assert float(c["WATCHDOG_S"]) < defaults.HOOK_TIMEOUT_S  # ends itself before Claude Code kills it


def test_python_hook_constants_equal_the_package_ones_and_the_scripts() -> None:
    c = script_constants()
    assert keys.session_hooks("S") == hook.KEY_PREFIX + "S" and c["KEY_PREFIX"] == hook.KEY_PREFIX
    assert hook.MAXLEN == keys.HOOKS_MAXLEN
    assert hook.PAYLOAD_CAP == 4 * MAX == int(c["PAYLOAD_CAP"])
    assert hook.SOCKET_TIMEOUT_S == defaults.HOOK_SOCKET_TIMEOUT_S


def test_python_hook_imports_the_standard_library_only() -> None:
    # It runs as `python -S -I hook.py`: no site-packages, no package of ours on its path.
    tree = ast.parse(HOOK_PY.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert names and {n.split(".")[0] for n in names} <= set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("raw, kept", [
    (b"{}", b"{}"),
    (b"a\0b", b"ab"),
    (b"x" * (4 * MAX + 10), b"x" * (4 * MAX)),
    (b"x" * (4 * MAX - 1) + "é".encode(), b"x" * (4 * MAX - 1)),  # a 2-byte character cut in two: dropped
    (b"x" * (4 * MAX - 2) + "é".encode(), b"x" * (4 * MAX - 2) + "é".encode()),  # ends on a boundary: kept
    (b"x" * (4 * MAX - 2) + "€".encode(), b"x" * (4 * MAX - 2)),  # 3-byte character, 2 bytes of it in
    (b"x" * (4 * MAX - 3) + "😀".encode(), b"x" * (4 * MAX - 3)),  # 4-byte character, 3 bytes of it in
])
def test_python_hook_cuts_the_payload_as_the_bash_one(raw: bytes, kept: bytes) -> None:
    assert hook._payload(raw[: 4 * MAX]) == kept


def test_script_has_no_eval_and_no_data_in_a_format() -> None:
    code = [line.split("#", 1)[0] for line in HOOK_SCRIPT.read_text(encoding="utf-8").splitlines()]
    assert not [line for line in code if re.search(r"\beval\b|\bsource\b|^\s*\.\s", line)]
    formats = [line for line in code if "printf" in line]
    assert all(re.search(r"printf (-v \w+ )?'[^']*'", f) for f in formats), formats  # a literal format


def test_payload_rules() -> None:
    assert parse_payload("") == {}
    assert parse_payload("  \n") == {}
    assert parse_payload('{"a": 1}') == {"a": 1}
    assert parse_payload("not json") == {"raw": "not json"}
    assert parse_payload("[1, 2]") == {"raw": "[1, 2]"}
    assert parse_payload("[" * 100_000) == {"raw": "[" * RAW_KEPT_CHARS}
    long = parse_payload(json.dumps({"prompt": "[T1.md] " + "x" * MAX, "cwd": "/"}))
    assert long["prompt"].startswith("[T1.md] ") and len(long["prompt"]) == MAX // 2
    assert long["prompt_truncated"] is True and long["cwd"] == "/"
    big = parse_payload(json.dumps({"other": "z" * MAX}))
    assert big["truncated"] is True and len(big["raw"]) == RAW_KEPT_CHARS
    cut = parse_payload(json.dumps({"prompt": "y" * 4 * MAX}))  # over what is read: cut JSON, kept as raw
    assert set(cut) == {"raw"}


@given(st.one_of(st.text(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30).map(json.dumps)))
def test_payload_is_always_a_dict_and_reading_it_again_changes_nothing(raw: str) -> None:
    # The Python hook stores parse_payload's JSON, which readers parse again: that must be the identity.
    payload = parse_payload(raw)
    assert isinstance(payload, dict)
    assert parse_payload(json.dumps(payload, ensure_ascii=False)) == payload


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_passes_shellcheck() -> None:
    proc = subprocess.run(["shellcheck", "-s", "bash", str(HOOK_SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


URL_CHARS = st.sampled_from(list("aZ09._-/:@?=#%+ ~[]") + ["db=", "redis://", "unix:///", "6379", "\t", "é"])


@given(st.one_of(
    st.builds(lambda head, tail: head + tail, st.sampled_from(["redis://", "unix:///", "rediss://", "REDIS://"]),
              st.lists(URL_CHARS, max_size=12).map("".join)),
    st.builds("redis://{}:{}@{}:{}/{}".format, st.text("ab9_", max_size=3), st.text("xy.-", max_size=3),
              st.text("hK.0", max_size=4), st.integers(0, 70000), st.text("0123", max_size=2)),
))
def test_python_hook_reads_plain_urls_as_urllib_does(url: str) -> None:
    # The hook reads the URL forms `dispatcher up` writes without importing urllib (10 ms); the rest goes to urllib.
    fast = hook._fast_target(url)
    if fast is not None:
        assert fast == hook._urllib_target(url)


@pytest.mark.parametrize("url, fast", [
    ("unix:///tmp/tmpab_1/redis.socket?db=0", True), ("unix:///tmp/r.sock", True),
    ("redis://127.0.0.1:6379/11", True), ("redis://user:pw@Redis.example:7000/2", True), ("redis://h", True),
    ("redis://:pw@h/0", True), ("redis://h:0/1", False), ("redis://h:99999/1", False), ("redis://p%40ss@h", False),
    ("redis://h/0?db=2", False), ("unix:///r.sock?db=", False), ("rediss://h/0", False), (" redis://h/0", False),
])
def test_python_hook_fast_url_forms(url: str, fast: bool) -> None:
    assert (hook._fast_target(url) is not None) is fast
    if fast:
        assert hook._fast_target(url) == hook._urllib_target(url)
