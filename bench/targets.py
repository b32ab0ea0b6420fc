"""The issue's targets, each checked against its figure in a run's summary.

A target is a group (which scenarios it applies to), a text, the figure it reads (a path into
the summary), a limit and a comparison. :func:`check` returns one line per applicable target
with the figure's value and pass/fail; a figure that is missing fails its target.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple


class Target(NamedTuple):
    group: str  # s3, steady, polling, saturation
    text: str
    figure: str  # dotted path into the summary
    limit: float | str  # a number, or the dotted path of another figure
    compare: Callable[[float, float], bool]
    beside: tuple[str, ...] = ()  # figures printed next to it


LE, GE = operator.le, operator.ge
TARGETS = [
    # 4 for a task's life, and one per section (3 here) to store its message id as soon as the
    # platform accepts its prompt, so that no crash ever has it sent again (never pay twice).
    Target("s3", "S3 writes per completed task <= 7", "s3.writes_per_task", 7, LE),
    Target("s3", "S3 reads per completed task <= 1", "s3.reads_per_task", 1, LE),
    Target(
        "s3",
        "no S3 read of a task document while the task runs",
        "s3.task_reads_while_running",
        0,
        LE,
        ("s3.task_reads_after_last_write",),
    ),
    Target(
        "steady",
        "every task completes",
        "tasks.completed",
        "tasks.submitted",
        GE,
        ("tasks.error", "tasks.unfinished", "tasks.refused"),
    ),
    Target(
        "steady",
        "machinery overhead p99 <= 250 ms",
        "overhead_ms.machinery.p99",
        250,
        LE,
        ("overhead_ms.machinery.p50",),
    ),
    Target("steady", "submit p99 <= 50 ms", "submit_ms.p99", 50, LE, ("submit_ms.p50",)),
    Target(
        "steady",
        "RSS growth over all services <= 150 MiB",
        "resources.rss_growth_mib.services",
        150,
        LE,
    ),
    Target(
        "polling",
        "polls per section <= half of a fixed 2-s interval's",
        "polling.ratio_to_fixed_2s",
        0.5,
        LE,
        ("polling.polls_per_section", "polling.fixed_2s_polls_per_section"),
    ),
    Target(
        "polling",
        "polling-added latency p50 <= a fixed 2-s interval's",
        "polling.polling_added_s.p50",
        "polling.fixed_2s_polling_added_s.p50",
        LE,
        (
            "polling.polling_added_s.p99",
            "overhead_ms.total.p50",
            "overhead_ms.total.p99",
        ),
    ),
    Target(
        "saturation",
        "saturation >= 35 tasks/s",
        "tasks_per_s",
        35,
        GE,
        ("s3.requests_per_s", "resources.cpu_busy_share"),
    ),
    Target(
        "saturation",
        "CPU <= 25 ms per task over all services",
        "resources.cpu_ms_per_task.services",
        25,
        LE,
        ("resources.cpu_ms_per_task.s3", "resources.cpu_ms_per_task.simulator"),
    ),
]


def figure(summary: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of the summary, or None."""
    value: Any = summary
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check(summary: dict[str, Any], groups: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every target of ``groups`` with its figure, its limit and whether it passes."""
    lines = []
    for target in TARGETS:
        if target.group not in groups:
            continue
        value = figure(summary, target.figure)
        limit = figure(summary, target.limit) if isinstance(target.limit, str) else target.limit
        numbers = isinstance(value, int | float) and isinstance(limit, int | float)
        lines.append(
            {
                "target": target.text,
                "figure": target.figure,
                "value": value,
                "limit": limit,
                "pass": bool(numbers and target.compare(value, limit)),
                "beside": {path: figure(summary, path) for path in target.beside},
            }
        )
    return lines


def render(lines: list[dict[str, Any]]) -> str:
    """The targets as text, one per line: PASS/FAIL, the target, its figure and the limit."""
    out = []
    for line in lines:
        beside = ", ".join(f"{_short(k)}={v}" for k, v in line["beside"].items())
        verdict = "PASS" if line["pass"] else "FAIL"
        out.append(
            f"  {verdict}  {line['target']}: {line['value']} (limit {line['limit']})"
            + (f"  [{beside}]" if beside else "")
        )
    return "\n".join(out)


def _short(path: str) -> str:
    return ".".join(path.split(".")[-2:])
