"""Dispatch order (pure): priority, then age, then name; round-robin across projects.

Within one priority level, projects take turns (each gives its oldest task)
so one project with a thousand tasks cannot starve the others. Projects take
their turns in the order of their oldest task, ties by name.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Iterable

from dispatcher.core.taskfile import Task


def _age_key(task: Task) -> tuple[float, str, str]:
    return (task.mtime, task.id, task.project)


def order_tasks(tasks: Iterable[Task]) -> list[Task]:
    """Return ``tasks`` in dispatch order."""
    by_rank: dict[int, dict[str, list[Task]]] = defaultdict(lambda: defaultdict(list))
    for task in tasks:
        by_rank[task.priority.rank][task.project].append(task)
    ordered: list[Task] = []
    for rank in sorted(by_rank):
        queues = [deque(sorted(q, key=_age_key)) for q in by_rank[rank].values()]
        queues.sort(key=lambda q: (q[0].mtime, q[0].project))
        while queues:
            for q in queues:
                ordered.append(q.popleft())
            queues = [q for q in queues if q]
    return ordered
