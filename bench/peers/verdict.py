"""The platform beside a peer: each figure with the platform/peer ratio, and issue 15's targets
with PASS/FAIL.

A run of one scenario gives two summaries of the same shape (:func:`bench.perf.measure`), the
platform's and the peer's. :func:`ratios` lines up the headline figures of both;
:func:`check` reads each target of the scenario's groups: a figure of one side (the platform's
unless said) against an absolute limit or against a figure of either side times a factor
(:class:`Ref`). A figure that is missing fails its target, as in :mod:`bench.targets`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from bench.targets import figure

PLATFORM, PEER = "platform", "peer"
STANDIN_CPU_MS = 0.3  # the stand-in's budget per request


class Ref(NamedTuple):
    """A limit read from a summary: ``factor`` times the figure at ``path`` of ``side``."""

    side: str
    path: str
    factor: float = 1.0


class Target(NamedTuple):
    group: str  # saturation, burst, steady, long, standin
    text: str
    figure: str  # dotted path into the summary of ``side``
    limit: float | Ref
    compare: Callable[[float, float], bool]
    side: str = PLATFORM


LE, GE = operator.le, operator.ge
TARGETS = [
    Target(
        "steady", "every task completes", "tasks.completed", Ref(PLATFORM, "tasks.submitted"), GE
    ),
    Target(
        "steady",
        "overhead p99 <= 0.5x the peer's",
        "overhead_ms.total.p99",
        Ref(PEER, "overhead_ms.total.p99", 0.5),
        LE,
    ),
    Target("steady", "machinery overhead p99 <= 250 ms", "overhead_ms.machinery.p99", 250, LE),
    Target("steady", "submit p99 <= 50 ms", "submit_ms.p99", 50, LE),
    Target(
        "steady",
        "polls per section <= 0.6x the fixed 2-s peer's",
        "polling.polls_per_section",
        Ref(PEER, "polling.polls_per_section", 0.6),
        LE,
    ),
    Target(
        "steady",
        "polling-added latency p50 <= the fixed 2-s peer's",
        "polling.polling_added_s.p50",
        Ref(PEER, "polling.polling_added_s.p50"),
        LE,
    ),
    Target(
        "burst",
        "overhead p99 <= the peer's (fresh stack)",
        "overhead_ms.total.p99",
        Ref(PEER, "overhead_ms.total.p99"),
        LE,
    ),
    Target(
        "burst",
        "polls per section <= 1.0x the fixed 2-s peer's (fresh stack)",
        "polling.polls_per_section",
        Ref(PEER, "polling.polls_per_section"),
        LE,
    ),
    Target(
        "saturation", "tasks/s >= 2x the peer's", "tasks_per_s", Ref(PEER, "tasks_per_s", 2), GE
    ),
    Target("saturation", "submit p99 <= 250 ms", "submit_ms.p99", 250, LE),
    Target(
        "saturation",
        "CPU over our own services <= 40 ms per task",
        "resources.cpu_ms_per_task.services",
        40,
        LE,
    ),
    Target(
        "long",
        "RSS growth over our own services <= 150 MiB",
        "resources.rss_growth_mib.services",
        150,
        LE,
    ),
    Target(
        "standin",
        f"stand-in CPU <= {STANDIN_CPU_MS} ms per request (platform's run)",
        "standin.cpu_ms_per_request",
        STANDIN_CPU_MS,
        LE,
    ),
    Target(
        "standin",
        f"stand-in CPU <= {STANDIN_CPU_MS} ms per request (peer's run)",
        "standin.cpu_ms_per_request",
        STANDIN_CPU_MS,
        LE,
        side=PEER,
    ),
]

# The figures printed side by side: label, dotted path.
FIGURES = [
    ("tasks completed", "tasks.completed"),
    ("tasks/s", "tasks_per_s"),
    ("submit p50 ms", "submit_ms.p50"),
    ("submit p99 ms", "submit_ms.p99"),
    ("elapsed p50 s", "elapsed_s.p50"),
    ("elapsed p99 s", "elapsed_s.p99"),
    ("overhead p50 ms", "overhead_ms.total.p50"),
    ("overhead p99 ms", "overhead_ms.total.p99"),
    ("machinery p50 ms", "overhead_ms.machinery.p50"),
    ("machinery p99 ms", "overhead_ms.machinery.p99"),
    ("polling-added p50 s", "polling.polling_added_s.p50"),
    ("polling-added p99 s", "polling.polling_added_s.p99"),
    ("polls per section", "polling.polls_per_section"),
    ("S3 writes per task", "s3.writes_per_task"),
    ("S3 reads per task", "s3.reads_per_task"),
    ("CPU ms per task, own services", "resources.cpu_ms_per_task.services"),
    ("CPU ms per task, Redis", "resources.cpu_ms_per_task.redis"),
    ("CPU ms per task, S3 server", "resources.cpu_ms_per_task.s3"),
    ("RSS growth MiB, own services", "resources.rss_growth_mib.services"),
    ("stand-in CPU ms per request", "standin.cpu_ms_per_request"),
]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def ratio(ours: object, theirs: object) -> float | None:
    """ours / theirs, rounded; None when either is not a number or theirs is 0."""
    a, b = _number(ours), _number(theirs)
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(summaries: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure of :data:`FIGURES`: the platform's, the peer's and their ratio."""
    rows = []
    for label, path in FIGURES:
        ours, theirs = figure(summaries[PLATFORM], path), figure(summaries[PEER], path)
        rows.append(
            {
                "figure": label,
                "path": path,
                PLATFORM: ours,
                PEER: theirs,
                "ratio": ratio(ours, theirs),
            }
        )
    return rows


def check(summaries: Mapping[str, dict[str, Any]], groups: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every target of ``groups``: its figure, its limit, and whether it passes."""
    lines = []
    for target in TARGETS:
        if target.group not in groups:
            continue
        value = figure(summaries[target.side], target.figure)
        if isinstance(target.limit, Ref):
            base = _number(figure(summaries[target.limit.side], target.limit.path))
            limit = None if base is None else round(base * target.limit.factor, 3)
        else:
            limit = target.limit
        number = _number(value)
        lines.append(
            {
                "target": target.text,
                "side": target.side,
                "figure": target.figure,
                "value": value,
                "limit": limit,
                "pass": number is not None
                and limit is not None
                and bool(target.compare(number, limit)),
            }
        )
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return str(value)


def render_ratios(rows: list[dict[str, Any]], peer: str) -> str:
    """The figures as a table: figure, platform, ``peer``, platform/peer."""
    table = [("figure", PLATFORM, peer, f"{PLATFORM}/{peer}")]
    table += [
        (row["figure"], _cell(row[PLATFORM]), _cell(row[PEER]), _cell(row["ratio"])) for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return "\n".join(
        "  "
        + line[0].ljust(widths[0])
        + "".join(f"  {c.rjust(w)}" for c, w in zip(line[1:], widths[1:], strict=True))
        for line in table
    )


def render_targets(lines: list[dict[str, Any]]) -> str:
    """The targets, one per line: PASS/FAIL, the target, its figure and its limit."""
    return "\n".join(
        f"  {'PASS' if line['pass'] else 'FAIL'}  {line['target']}: {_cell(line['value'])} "
        f"(limit {_cell(line['limit'])})"
        for line in lines
    )
