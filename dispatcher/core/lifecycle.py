"""What the monitor should do with a pool session, decided from what was seen (pure, no I/O).

``flows.monitor`` gathers an :class:`Evidence` (done/ file, pane, screen, hook reports) and
applies the :class:`Action` that :func:`decide` returns. Hook reports are trusted first; the
screen is the fallback. The rules, in order:

1. A session's state alone decides when nothing is watched: MISSING → recreate, LIMITED →
   resume when the pause allows, anything but WORKING/WAITING → nothing.
2. The pane's agent tag differs from the session's agent: tmux was replaced under us → agent lost.
3. The task is in done/ → finish.
4. A usage/API limit in the current turn → limited (see :func:`turn_limit`).
5. The pane is dead → the agent died.
6. A waiting-for-a-human Notification not followed by a Stop or a new prompt → waiting;
   none while WAITING → working again.
7. The agent's turn ended (Stop hook after the prompt, or the screen says so) and it is not busy:
   start the grace timer, and fail the task once the timer passed ``finish_grace``; a busy agent
   clears the timer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from dispatcher.core import limits, screen
from dispatcher.core.hook_report import HookReport, stream_order

#: Notification types that mean "the agent waits for a person".
WAITING_TYPES = ("permission_prompt", "elicitation_dialog")
#: Session states (values of ``store.sessions.State``, a ``str`` enum; core does not import the store).
WORKING, WAITING, LIMITED, MISSING = "working", "waiting", "limited", "missing"
#: Failure reason when the agent stopped without moving its task to done/.
NOT_DONE = "agent finished its turn but the task is not in done/"
#: Detail when the pane's agent is not the session's.
PANE_REPLACED = "agent's tmux session was replaced"
#: Most screen text kept as a failure note's "last screen lines".
TAIL_CHARS = 2000


class Step(str, Enum):
    """What the monitor does next with one session."""

    NOTHING = "nothing"
    RECREATE = "recreate"  # the tmux session vanished: make it again, resume an owned task
    MAYBE_RESUME = "maybe-resume"  # limited: resume the agent unless the pool is still paused
    AGENT_LOST = "agent-lost"  # the pane holds another agent (tmux restarted): resume the conversation
    FINISH = "finish"  # the task is in done/
    LIMITED = "limited"  # a usage / API limit ended the turn: pause the pool, keep the task
    AGENT_DIED = "agent-died"  # the agent process ended without finishing: requeue (bounded)
    WAITING = "waiting"  # the agent asks a person (permission, question)
    WORKING_AGAIN = "working-again"  # the question was answered
    IDLE_SEEN = "idle-seen"  # first look at a finished turn without done/: start the grace timer
    IDLE_CLEARED = "idle-cleared"  # busy again: stop the grace timer
    FAIL = "fail"  # idle past the grace without done/: the task failed


@dataclass(frozen=True)
class Action:
    """A :class:`Step` with what it needs: the reason / waiting text, the limit, the screen's tail."""

    step: Step
    detail: str = ""
    limit: limits.Limit | None = None
    tail: str = ""


NOTHING = Action(Step.NOTHING)


class SessionFacts(Protocol):
    """The fields of a session the rules read (``store.sessions.SessionInfo`` has them)."""

    @property
    def state(self) -> str: ...

    @property
    def agent_uuid(self) -> str: ...

    @property
    def idle_since(self) -> float: ...

    @property
    def hooks_after(self) -> str: ...


@dataclass(frozen=True)
class Evidence:
    """What one look at a working session showed."""

    done: bool  # the task is in its project's done/
    dead: bool  # the pane's process ended (or the pane could not be read)
    screen: str  # the pane's visible text
    reports: Sequence[HookReport] = ()  # hook reports of this session (any order)
    pane_agent: str | None = None  # the pane's ``agent_uuid`` tag (None: no tag / no session)


def by_state(session: SessionFacts) -> Action | None:
    """The action the state alone decides (no need to look at the pane), else None."""
    if session.state == MISSING:
        return Action(Step.RECREATE)
    if session.state == LIMITED:
        return Action(Step.MAYBE_RESUME)
    if session.state not in (WORKING, WAITING):
        return NOTHING
    return None


def decide(evidence: Evidence, session: SessionFacts, now: float, finish_grace: float) -> Action:
    """What to do with ``session`` given ``evidence`` seen at ``now`` (rules in the module docstring)."""
    early = by_state(session)
    if early is not None:
        return early
    if evidence.pane_agent != session.agent_uuid:
        return Action(Step.AGENT_LOST, PANE_REPLACED)
    if evidence.done:
        return Action(Step.FINISH)
    reports = current_reports(evidence.reports, session.hooks_after)
    limit = turn_limit(reports, evidence.screen)
    if limit is not None:
        return Action(Step.LIMITED, limit=limit)
    if evidence.dead:
        return Action(Step.AGENT_DIED, tail=screen_tail(evidence.screen))
    question = waiting_for(reports)
    if question and session.state != WAITING:
        return Action(Step.WAITING, question)
    if not question and session.state == WAITING:
        return Action(Step.WORKING_AGAIN)
    if turn_ended(reports, evidence.screen, dead=evidence.dead):
        if not session.idle_since:
            return Action(Step.IDLE_SEEN)
        if now - session.idle_since >= finish_grace:
            return Action(Step.FAIL, NOT_DONE, tail=screen_tail(evidence.screen))
    elif session.idle_since:
        return Action(Step.IDLE_CLEARED)
    return NOTHING


def current_reports(reports: Sequence[HookReport], after_id: str) -> list[HookReport]:
    """Reports newer than ``after_id`` (older ones are about a previous agent), in stream order."""
    floor = stream_order(after_id or "0-0")
    return sorted((r for r in reports if r.order > floor), key=lambda r: r.order)


def _latest(reports: Sequence[HookReport], event: str) -> HookReport | None:
    found = [r for r in reports if r.event == event]
    return found[-1] if found else None


def turn_limit(reports: Sequence[HookReport], text: str) -> limits.Limit | None:
    """The limit that ended the current turn, from the StopFailure hook or the screen.

    A StopFailure older than the last prompt is about an earlier turn (e.g. reported late by the
    agent we just resumed); limit texts above the last prompt on screen are old turns redrawn by a
    resumed agent. Hook and screen are read by the same classifier; the screen wins when it names
    a reset time.
    """
    failure = _latest(reports, "StopFailure")
    submit = _latest(reports, "UserPromptSubmit")
    if failure is not None and submit is not None and failure.order < submit.order:
        failure = None
    by_hook = limits.from_hook(failure.payload) if failure is not None else None
    on_screen = screen.detect_limit(screen.current_turn(text))
    return on_screen if on_screen is not None and (by_hook is None or on_screen.resets) else by_hook


def waiting_for(reports: Sequence[HookReport]) -> str | None:
    """What the agent asks a person, from the last Notification not cleared by a later prompt or Stop."""
    note = _latest(reports, "Notification")
    if note is None or note.payload.get("notification_type") not in WAITING_TYPES:
        return None
    if any(r.event in ("UserPromptSubmit", "Stop") and r.order > note.order for r in reports):
        return None
    return str(note.payload.get("message") or "agent waits for input")


def turn_ended(reports: Sequence[HookReport], text: str, *, dead: bool) -> bool:
    """The agent is idle after a turn: a Stop newer than the last prompt, or the screen says so; never while busy."""
    stop = _latest(reports, "Stop")
    submit = _latest(reports, "UserPromptSubmit")
    hook_idle = stop is not None and (submit is None or stop.order > submit.order)
    return not dead and not screen.is_busy(text) and (hook_idle or screen.turn_finished(text))


def screen_tail(text: str) -> str:
    """The screen's last non-blank lines (at most ``TAIL_CHARS``), for a failure note."""
    return "\n".join(line for line in text.splitlines() if line.strip())[-TAIL_CHARS:]
