"""Dispatch order (pure): priority, then age, then name; round-robin across projects.

Within one priority level, projects take turns (each gives its oldest task)
so one project with a thousand tasks cannot starve the others. Projects take
their turns in the order of their oldest task, ties by name.

``round_robin`` is the rule over any items (the ready index orders its
lightweight entries with it, so its order is the plan's by construction);
``order_tasks`` applies it to parsed tasks.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from dispatcher.core.taskfile import Task

T = TypeVar("T")


def round_robin(items: Iterable[T], *, rank: Callable[[T], int], project: Callable[[T], str],
                age: Callable[[T], tuple[float | str, str]]) -> list[T]:
    """Order ``items``: by rank; within a rank, projects take turns by their oldest item.

    ``age`` is (mtime, id), or any pair that sorts the same way (the ready index's sortable mtime text).
    """
    by_rank: dict[int, dict[Hashable, list[T]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        by_rank[rank(item)][project(item)].append(item)
    ordered: list[T] = []
    for r in sorted(by_rank):
        queues = [deque(sorted(q, key=lambda x: (*age(x), project(x)))) for q in by_rank[r].values()]
        queues.sort(key=lambda q: (age(q[0])[0], project(q[0])))
        while queues:
            for q in queues:
                ordered.append(q.popleft())
            queues = [q for q in queues if q]
    return ordered


def order_tasks(tasks: Iterable[Task]) -> list[Task]:
    """Return ``tasks`` in dispatch order."""
    return round_robin(tasks, rank=lambda t: t.priority.rank, project=lambda t: t.project,
                       age=lambda t: (t.mtime, t.id))
