"""The bash hook client's constants equal the Python side's, and the payload rules both clients share (no I/O).

dispatcher/hook.sh is run against real Redis in tests/integration/test_hook_client.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.agent.hook_settings import HOOK_SCRIPT
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
