"""The monitor's lifecycle rules (core.lifecycle.decide), one test per rule, over real Claude Code
screens (tests/fixtures/claude_screens) and hand-built hook report sequences. No I/O."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core import hook_report, lifecycle
from dispatcher.core.hook_report import HookReport, stream_order
from dispatcher.core.lifecycle import NOT_DONE, PANE_REPLACED, Action, Evidence, Step, decide
from dispatcher.core.limits import OVERLOADED, RATE_LIMIT, USAGE_LIMIT
from dispatcher.store.sessions import SessionInfo, State

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_screens"
AGENT = "0b7c3e52-7f0e-4f63-9d5c-3a7c1a1c2f00"
NOW = 10_000.0
GRACE = 30.0
RATE_TEXT = "API Error: Request rejected (429) · Fake rate limit reached for e2e"
USAGE_TEXT = "You've hit your limit · resets 2pm (America/Toronto)"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def split_box(text: str) -> tuple[list[str], list[str]]:
    """A screen's history lines and its input box (the rule above ``❯``+NBSP, the box, the footer)."""
    lines = text.split("\n")
    at = max(i for i, line in enumerate(lines) if line.startswith("❯\u00a0"))
    return lines[:at - 1], lines[at - 1:]


def resumed(old: str, *turn: str, box_of: str = "busy.txt") -> str:
    """``old``'s history redrawn by a resumed agent, then a new turn, then ``box_of``'s input box."""
    history, _ = split_box(fixture(old))
    _, box = split_box(fixture(box_of))
    return "\n".join([*history, *turn, *box])


def session(state: State = State.WORKING, **kw: Any) -> SessionInfo:
    return SessionInfo(name="ccl-0", state=state, project="p", task="T1", agent_uuid=AGENT, host="h", **kw)


def hook(entry_id: str, event: str, **payload: Any) -> HookReport:
    return HookReport(id=entry_id, event=event, session="h/ccl-0", task="p:T1", time=0.0, payload=payload)


def look(screen_name: str | None = None, *reports: HookReport, text: str = "", done: bool = False,
         dead: bool = False, pane_agent: str | None = AGENT) -> Evidence:
    return Evidence(done=done, dead=dead, screen=fixture(screen_name) if screen_name else text,
                    reports=reports, pane_agent=pane_agent)


def step_of(evidence: Evidence, info: SessionInfo | None = None, now: float = NOW) -> Step:
    return decide(evidence, info or session(), now, GRACE).step


SUBMIT = hook("100-0", "UserPromptSubmit", prompt="[T1.md] do it")
STOP = hook("200-0", "Stop")
RATE_FAILURE = hook("150-0", "StopFailure", error="rate_limit", last_assistant_message=RATE_TEXT)
PERMISSION = hook("120-0", "Notification", notification_type="permission_prompt",
                  message="Claude needs your permission to use Bash")


# -- the state alone ---------------------------------------------------------------------------------

@pytest.mark.parametrize("state,step", [(State.MISSING, Step.RECREATE), (State.LIMITED, Step.MAYBE_RESUME),
                                        (State.IDLE, Step.NOTHING), (State.LAUNCHING, Step.NOTHING),
                                        (State.FINISHED, Step.NOTHING), (State.FAILED, Step.NOTHING)])
def test_unwatched_states_are_decided_by_state_alone(state: State, step: Step) -> None:
    # Whatever the pane shows (here: done, dead, limited): it is not looked at.
    evidence = look("api_error_429.txt", done=True, dead=True)
    assert lifecycle.by_state(session(state)) == Action(step)
    assert step_of(evidence, session(state)) is step


@pytest.mark.parametrize("state", [State.WORKING, State.WAITING])
def test_watched_states_need_a_look(state: State) -> None:
    assert lifecycle.by_state(session(state)) is None


def test_state_names_match_the_store() -> None:
    assert (lifecycle.WORKING, lifecycle.WAITING, lifecycle.LIMITED, lifecycle.MISSING) == (
        State.WORKING, State.WAITING, State.LIMITED, State.MISSING)


# -- tmux replaced -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pane_agent", [None, "", "11111111-2222-3333-4444-555555555555"])
def test_another_agent_in_the_pane_means_the_agent_was_lost(pane_agent: str | None) -> None:
    action = decide(look("finished.txt", done=True, pane_agent=pane_agent), session(), NOW, GRACE)
    assert action == Action(Step.AGENT_LOST, PANE_REPLACED)


# -- done ------------------------------------------------------------------------------------------------

def test_done_finishes_before_limits_and_a_dead_pane_are_looked_at() -> None:
    assert step_of(look("api_error_429.txt", RATE_FAILURE, SUBMIT, done=True, dead=True)) is Step.FINISH


# -- limits ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("api_error_429.txt", RATE_LIMIT), ("api_error_429_v2.1.332.txt", RATE_LIMIT),
                                       ("api_error_529_v2.1.197.txt", OVERLOADED),
                                       ("api_error_529_v2.1.332.txt", OVERLOADED)])
def test_a_limit_on_the_real_screen_limits_the_session(name: str, kind: str) -> None:
    action = decide(look(name), session(), NOW, GRACE)
    assert action.step is Step.LIMITED and action.limit is not None and action.limit.kind == kind


def test_a_stop_failure_hook_limits_the_session_while_the_screen_shows_nothing() -> None:
    action = decide(look("busy.txt", SUBMIT, RATE_FAILURE), session(), NOW, GRACE)
    assert action.step is Step.LIMITED and action.limit is not None
    assert action.limit.kind == RATE_LIMIT and action.limit.message == "Fake rate limit reached for e2e"


def test_a_stop_failure_older_than_the_prompt_is_about_an_earlier_turn() -> None:
    # The resumed agent reports its old turn's failure late: the new prompt came after it.
    late = hook("90-0", "StopFailure", error="rate_limit", last_assistant_message=RATE_TEXT)
    assert step_of(look("busy.txt", late, SUBMIT)) is Step.NOTHING


def test_stream_ids_order_numerically_not_as_text() -> None:
    # "1000-0" sorts before "999-0" as text; the failure is the newer report.
    failure = hook("1000-0", "StopFailure", error="rate_limit", last_assistant_message=RATE_TEXT)
    submit = hook("999-0", "UserPromptSubmit", prompt="[T1.md]")
    assert step_of(look("busy.txt", failure, submit)) is Step.LIMITED
    assert stream_order("1000-0") > stream_order("999-5") > stream_order("999-0") > stream_order("bad")


def test_reports_are_judged_in_stream_order_whatever_order_they_came_in() -> None:
    assert step_of(look("busy.txt", RATE_FAILURE, SUBMIT)) is Step.LIMITED
    assert step_of(look("busy.txt", SUBMIT, RATE_FAILURE)) is Step.LIMITED


def test_the_screen_wins_over_the_hook_when_it_names_a_reset_time() -> None:
    text = resumed("finished.txt", "❯ [T1.md] do it", f"● {USAGE_TEXT}", "✻ Baked for 1s", box_of="finished.txt")
    action = decide(look(None, SUBMIT, RATE_FAILURE, text=text), session(), NOW, GRACE)
    assert action.limit is not None and action.limit.kind == USAGE_LIMIT
    assert action.limit.resets == "2pm (America/Toronto)"


def test_the_hook_wins_over_a_screen_limit_without_a_reset_time() -> None:
    usage = hook("150-0", "StopFailure", error="rate_limit", last_assistant_message=USAGE_TEXT)
    action = decide(look("api_error_429.txt", SUBMIT, usage), session(), NOW, GRACE)
    assert action.limit is not None and action.limit.kind == USAGE_LIMIT


def test_limits_redrawn_by_a_resumed_agent_do_not_count_only_the_current_turn_does() -> None:
    # The resumed agent redraws the old turn's 429 above the new prompt, then works on.
    redrawn = resumed("api_error_429.txt", "❯ [T1.md] Please continue", "✢ Jitterbugging…")
    assert step_of(look(None, text=redrawn)) is Step.NOTHING
    # A limit below the new prompt is this turn's.
    again = resumed("api_error_429.txt", "❯ [T1.md] Please continue", f"● {RATE_TEXT}", "✻ Baked for 1s",
                    box_of="finished.txt")
    assert step_of(look(None, text=again)) is Step.LIMITED


def test_a_limit_text_in_the_users_message_is_not_a_limit() -> None:
    quoted = resumed("finished.txt", f"❯ [T1.md] If you see '{USAGE_TEXT}', stop", "✢ Jitterbugging…")
    assert step_of(look(None, text=quoted)) is Step.NOTHING


def test_hook_reports_from_before_this_agent_are_ignored() -> None:
    # hooks_after: the stream id before this agent started (the reader already skips them; the rule too).
    assert step_of(look("busy.txt", RATE_FAILURE), session(hooks_after="150-0")) is Step.NOTHING
    assert step_of(look("busy.txt", RATE_FAILURE), session(hooks_after="149-9")) is Step.LIMITED


def test_a_limit_is_seen_before_a_dead_pane() -> None:
    assert step_of(look("api_error_429.txt", dead=True)) is Step.LIMITED
    # Real: the agent was told /exit after its turn ended on a 429; the limit, not the exit, is what counts.
    assert step_of(look("exit_resume.txt", dead=True)) is Step.LIMITED


# -- dead pane -------------------------------------------------------------------------------------------

def test_a_dead_pane_means_the_agent_died_with_the_screen_tail_kept() -> None:
    action = decide(look("exit_resume_v2.1.332.txt", SUBMIT, dead=True), session(), NOW, GRACE)
    assert action.step is Step.AGENT_DIED
    assert "Resume this session with:" in action.tail
    assert all(line.strip() for line in action.tail.splitlines()) and len(action.tail) <= lifecycle.TAIL_CHARS


def test_an_unreadable_pane_is_dead_with_an_empty_tail() -> None:
    assert decide(look(None, dead=True), session(), NOW, GRACE) == Action(Step.AGENT_DIED)


# -- waiting for a person -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["permission_prompt", "elicitation_dialog"])
def test_a_notification_asking_a_person_makes_the_session_wait(kind: str) -> None:
    note = hook("120-0", "Notification", notification_type=kind, message="Which database?")
    assert decide(look("busy.txt", SUBMIT, note), session(), NOW, GRACE) == Action(Step.WAITING, "Which database?")


def test_a_notification_without_a_message_still_waits() -> None:
    note = hook("120-0", "Notification", notification_type="permission_prompt")
    assert decide(look("busy.txt", SUBMIT, note), session(), NOW, GRACE).detail == "agent waits for input"


def test_other_notifications_do_not_wait() -> None:
    note = hook("120-0", "Notification", notification_type="idle_prompt", message="Claude is waiting for your input")
    assert step_of(look("busy.txt", SUBMIT, note)) is Step.NOTHING


@pytest.mark.parametrize("later", [hook("130-0", "Stop"), hook("130-0", "UserPromptSubmit", prompt="yes")])
def test_a_later_stop_or_prompt_clears_the_notification(later: HookReport) -> None:
    assert step_of(look("busy.txt", SUBMIT, PERMISSION, later)) is Step.NOTHING
    assert step_of(look("busy.txt", SUBMIT, PERMISSION, later), session(State.WAITING)) is Step.WORKING_AGAIN


def test_an_earlier_stop_does_not_clear_the_notification() -> None:
    earlier = hook("110-0", "Stop")
    assert step_of(look("busy.txt", SUBMIT, earlier, PERMISSION)) is Step.WAITING


def test_a_waiting_session_still_asked_is_left_waiting() -> None:
    assert step_of(look("busy.txt", SUBMIT, PERMISSION), session(State.WAITING)) is Step.NOTHING


def test_a_waiting_session_is_watched_for_the_finish_grace_too() -> None:
    # The question stands, but the turn ended long ago and the task is not done.
    waiting = session(State.WAITING, idle_since=NOW - GRACE)
    assert step_of(look("finished.txt", SUBMIT, PERMISSION), waiting) is Step.FAIL


# -- idle turn and the finish grace ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["finished.txt", "finished_v2.1.332.txt"])
def test_a_finished_turn_on_the_real_screen_starts_the_grace_timer(name: str) -> None:
    assert step_of(look(name)) is Step.IDLE_SEEN


def test_a_stop_after_the_prompt_is_an_idle_turn_even_when_the_screen_cannot_tell() -> None:
    assert step_of(look("ready.txt")) is Step.NOTHING
    assert step_of(look("ready.txt", SUBMIT, STOP)) is Step.IDLE_SEEN


def test_a_stop_before_the_prompt_is_the_previous_turn() -> None:
    assert step_of(look("ready.txt", hook("90-0", "Stop"), SUBMIT)) is Step.NOTHING


@pytest.mark.parametrize("name", ["busy.txt", "busy_v2.1.332.txt", "api_retrying.txt", "queued.txt"])
def test_a_busy_screen_is_never_idle_whatever_the_hooks_say(name: str) -> None:
    assert step_of(look(name, SUBMIT, STOP)) is Step.NOTHING
    assert step_of(look(name, SUBMIT, STOP), session(idle_since=NOW - 1)) is Step.IDLE_CLEARED


def test_idle_within_the_grace_waits() -> None:
    assert step_of(look("finished.txt"), session(idle_since=NOW - GRACE + 1)) is Step.NOTHING


def test_idle_past_the_grace_without_done_fails_the_task() -> None:
    action = decide(look("finished.txt", SUBMIT, STOP), session(idle_since=NOW - GRACE), NOW, GRACE)
    assert action.step is Step.FAIL and action.detail == NOT_DONE
    assert action.tail.endswith("high · /effort") and "✻ Cogitated for 0s" in action.tail


def test_the_grace_timer_stays_off_while_working() -> None:
    assert step_of(look("busy.txt", SUBMIT)) is Step.NOTHING


# -- purity --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", [lifecycle, hook_report])
def test_the_rules_import_only_core_and_the_standard_library(module: Any) -> None:
    tree = ast.parse(inspect.getsource(module))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = ("dispatcher.core", "__future__", "collections.abc", "dataclasses", "enum", "typing")
    assert all(name.startswith(allowed) for name in imported), imported
