"""The task figures of one orchestrator replica, as its metrics report them, and their sum over
replicas: what the dashboard's totals show (``GetStats`` with ``all_replicas``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from orchestrator.models import TaskState

RUNNING_STATES = tuple(state.value for state in TaskState if not state.terminal)


@dataclass(frozen=True)
class TaskFigures:
    """One replica's tasks: unfinished ones by state, running, submitted, finished by final
    state, taken over."""

    by_state: dict[str, int]
    running: int
    submitted: int
    finished: dict[str, int]
    taken_over: int


def sum_figures(figures: list[TaskFigures]) -> TaskFigures:
    """The figures of several replicas added up, state by state; every unfinished state is
    present (0 when no replica has a task in it)."""
    by_state: Counter[str] = Counter(dict.fromkeys(RUNNING_STATES, 0))
    finished: Counter[str] = Counter()
    for one in figures:
        by_state.update(one.by_state)
        finished.update(one.finished)
    return TaskFigures(
        by_state=dict(by_state),
        running=sum(one.running for one in figures),
        submitted=sum(one.submitted for one in figures),
        finished=dict(finished),
        taken_over=sum(one.taken_over for one in figures),
    )
