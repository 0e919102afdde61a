"""Dispatch order: priority > age > name, round-robin between projects of one priority."""

from __future__ import annotations

from pathlib import Path

from dispatcher.core.ordering import order_tasks
from dispatcher.core.taskfile import Priority, Task


def t(key: str, priority: str = "default", mtime: float = 0.0) -> Task:
    project, task_id = key.split(":")
    return Task(id=task_id, project=project, path=Path(f"{task_id}.md"), priority=Priority(priority), mtime=mtime)


def order(tasks: list[Task]) -> list[str]:
    return [f"{x.project}:{x.id}" for x in order_tasks(tasks)]


def test_priority_beats_age():
    tasks = [t("p:OLD_LOW", "low", 1), t("p:NEW_CRIT", "critical", 9), t("p:MID", "default", 5), t("p:HIGH", "high", 7)]

    assert order(tasks) == ["p:NEW_CRIT", "p:HIGH", "p:MID", "p:OLD_LOW"]


def test_age_beats_name_within_a_priority():
    assert order([t("p:A", mtime=3), t("p:B", mtime=1), t("p:C", mtime=2)]) == ["p:B", "p:C", "p:A"]


def test_name_breaks_age_ties():
    assert order([t("p:T2", mtime=1), t("p:T10", mtime=1), t("p:A", mtime=1)]) == ["p:A", "p:T10", "p:T2"]


def test_busy_project_cannot_starve_others_of_the_same_priority():
    busy = [t(f"busy:B{i}", mtime=i) for i in range(100)]
    quiet = [t("quiet:Q", mtime=50.5), t("other:O", mtime=99.5)]

    result = order(busy + quiet)

    assert result[:3] == ["busy:B0", "quiet:Q", "other:O"]
    assert result[3:] == [f"busy:B{i}" for i in range(1, 100)]


def test_round_robin_takes_turns_in_order_of_each_projects_oldest_task():
    tasks = [t("a:A1", mtime=2), t("a:A2", mtime=3), t("a:A3", mtime=4), t("b:B1", mtime=1), t("b:B2", mtime=10)]

    assert order(tasks) == ["b:B1", "a:A1", "b:B2", "a:A2", "a:A3"]


def test_round_robin_does_not_cross_priorities():
    tasks = [t("a:A1", "high", 1), t("a:A2", "high", 2), t("b:B1", "low", 0), t("b:B2", "high", 3)]

    assert order(tasks) == ["a:A1", "b:B2", "a:A2", "b:B1"]


def test_projects_with_equal_oldest_age_go_by_name():
    assert order([t("zeta:Z", mtime=1), t("alpha:A", mtime=1)]) == ["alpha:A", "zeta:Z"]


def test_empty_input():
    assert order_tasks([]) == []


def test_order_is_a_permutation_and_input_order_does_not_matter():
    tasks = [t(f"p{i % 3}:T{i}", ("critical", "high", "default", "low")[i % 4], mtime=i % 5) for i in range(40)]

    assert order(tasks) == order(list(reversed(tasks)))
    assert sorted(order(tasks)) == sorted(f"{x.project}:{x.id}" for x in tasks)
