"""The workers' poll plans measured in simulation, not on the machine: ``python -m
bench.polling_sim`` (pure Python, seeded, no processes, a few seconds).

Jobs are simulated in virtual time against the real plan code
(:class:`section_worker.polling.LatencyBook`): each section's prompt is sent at its task's
arrival, its answer is ready a lognormal latency later (capped at 45 s, as the simulator and
the benchmark's stand-in cap it), and the job polls when its worker's book says, learning from
every answer it finds. Workers (two, as the benchmark runs) keep their own books and exchange
what they measured through a shared window every ``WORKER_POLL_SHARE_S``, as
:mod:`section_worker.latency_sharing` does through the store. Nothing runs late here: the
figures are the plans', not the machine's.

For each load (the issue's two: *steady*, 100 tasks of three sections at 25 tasks/s, median
20 s, sigma 0.5; *burst*, 100 tasks at once, median 5 s, sigma 0.5) and each starting
knowledge (nothing; a prior equal to the truth; N answers already measured) it reports polls
per section, their ratio to a fixed 2-s poller's on the same latencies (``max(1, ceil(L /
2))`` polls, as ``bench/figures.py`` counts it), and the polling-added latency (answer found
minus ready) p50 / p99 beside the fixed poller's, averaged over ``--runs`` seeded runs (the
worst run's ratio too).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.platform_config import LatencyPrior
from section_worker.polling import LatencyBook, fresh_plan
from section_worker.settings import WorkerSettings

FIXED_S = 2.0
CAP_S = 45.0
HOLD_S = 120.0  # the sections' timeout: an answer is held back at most this long before it counts


@dataclass(frozen=True)
class Load:
    """Tasks of ``sections`` sections (one per asset), arriving at ``rate`` a second (None:
    all at once), whose answers take lognormal(median, sigma) seconds, capped at ``cap_s``."""

    name: str
    tasks: int
    rate: float | None
    median_s: float
    sigma: float
    sections: int = 3
    cap_s: float = CAP_S


STEADY = Load("steady", tasks=100, rate=25.0, median_s=20.0, sigma=0.5)
BURST = Load("burst", tasks=100, rate=None, median_s=5.0, sigma=0.5)
LOADS = {load.name: load for load in (STEADY, BURST)}


@dataclass(frozen=True)
class Start:
    """What the workers know when the load starts: a prior per asset (``prior_scale`` times
    the true median; None: no prior), and ``answers`` latencies per asset already measured
    (found by the fresh-start plan); ``learn`` off freezes the plan at that."""

    name: str
    prior_scale: float | None = None
    answers: int = 0
    learn: bool = True
    hold_s: float = HOLD_S


STARTS = (
    Start("nothing known, fresh-start plan", learn=False),
    Start("fresh stack, own answers held back (the default)"),
    Start("fresh stack, own answers counted at once", hold_s=0.0),
    Start("prior = the true latencies", prior_scale=1.0),
    Start("prior = the true latencies, own answers counted at once", prior_scale=1.0, hold_s=0.0),
    Start("prior 2x too slow", prior_scale=2.0),
    Start("prior 2x too fast", prior_scale=0.5),
    Start("learned from 20 answers", answers=20),
    Start("learned from 100 answers", answers=100),
    Start("learned from 200 answers", answers=200),
)


@dataclass
class Outcome:
    """Per section: polls and the latency polling added; the fixed 2-s poller's beside."""

    polls: list[int] = field(default_factory=list)
    added: list[float] = field(default_factory=list)
    fixed_polls: list[int] = field(default_factory=list)
    fixed_added: list[float] = field(default_factory=list)
    # Per task: (answer ready, found, found by the fixed poller) of each section, seconds from
    # the task's arrival.
    tasks: dict[int, list[tuple[float, float, float]]] = field(default_factory=dict)

    def record(self, task: int, polls: int, added: float, latency: float) -> None:
        self.polls.append(polls)
        self.added.append(added)
        fixed = max(1, math.ceil(latency / FIXED_S))
        self.fixed_polls.append(fixed)
        self.fixed_added.append(fixed * FIXED_S - latency)
        found = latency + added
        self.tasks.setdefault(task, []).append((latency, found, fixed * FIXED_S))

    def task_added(self, *, fixed: bool = False) -> list[float]:
        """Per task, what polling added to it: its last answer found minus its last ready (the
        benchmark's ``overhead_ms.polling_added``)."""
        pick = 2 if fixed else 1
        return [
            max(s[pick] for s in sections) - max(s[0] for s in sections)
            for sections in self.tasks.values()
        ]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def lognormal(rng: random.Random, load: Load) -> float:
    return min(rng.lognormvariate(math.log(load.median_s), load.sigma), load.cap_s)


@dataclass
class _Job:
    task: int
    start: float
    latency: float
    asset: str
    worker: int
    last: float | None = None
    planned: float = 0.0  # the next poll, seconds after the prompt
    polls: int = 0


def simulate(
    load: Load,
    start: Start,
    seed: int,
    *,
    workers: int = 2,
    settings: WorkerSettings | None = None,
) -> Outcome:
    """One seeded run of ``load`` from ``start``."""
    settings = settings or WorkerSettings()
    rng = random.Random(seed)
    assets = [f"asset-{i}" for i in range(load.sections)]
    now = 0.0

    def clock() -> float:
        return now

    prior: Callable[[str], LatencyPrior | None] = lambda asset: None  # noqa: E731
    if start.prior_scale is not None:
        believed = LatencyPrior(median_s=load.median_s * start.prior_scale, sigma=load.sigma)
        prior = lambda asset: believed  # noqa: E731
    books = [
        LatencyBook(settings, prior, clock=clock, rng=random.Random(seed * 31 + w))
        for w in range(workers)
    ]
    store: dict[str, list[float]] = {a: [] for a in assets}

    def exchange(book: LatencyBook) -> None:
        for asset, values in book.begin_share().items():
            store[asset] = (store[asset] + values)[-settings.poll_window :]
        book.end_share({a: list(v) for a, v in store.items()})

    warm = fresh_plan(settings)
    for asset in assets:
        for _ in range(start.answers):
            latency = lognormal(rng, load)
            last, at = 0.0, warm.next_after(None)
            while at < latency:
                last, at = at, warm.next_after(at)
            books[0].observe(asset, last, at)
    for book in books:
        exchange(book)

    events: list[tuple[float, int, int]] = []  # (time, kind 0 share / 1 poll, index)
    jobs: list[_Job] = []
    for task in range(load.tasks):
        arrival = task / load.rate if load.rate else 0.0
        for asset in assets:
            job = _Job(task, arrival, lognormal(rng, load), asset, rng.randrange(workers))
            jobs.append(job)
            job.planned = books[job.worker].next_poll(asset, None)
            heapq.heappush(events, (arrival + job.planned, 1, len(jobs) - 1))
    for w in range(workers):
        heapq.heappush(events, (settings.poll_share_s * (w + 1) / workers, 0, w))
    outcome = Outcome()
    pending = len(jobs)
    while pending:
        now, kind, index = heapq.heappop(events)
        if kind == 0:
            exchange(books[index])
            heapq.heappush(events, (now + settings.poll_share_s, 0, index))
            continue
        job = jobs[index]
        book = books[job.worker]
        age = job.planned
        job.polls += 1
        if age >= job.latency - 1e-9:
            if start.learn:
                book.observe(job.asset, job.last or 0.0, age, hold_s=start.hold_s)
            outcome.record(job.task, job.polls, age - job.latency, job.latency)
            pending -= 1
            continue
        job.last = age
        job.planned = book.next_poll(job.asset, age)
        heapq.heappush(events, (job.start + job.planned, 1, index))
    return outcome


@dataclass(frozen=True)
class Figures:
    """A load and start's figures over several runs."""

    load: str
    start: str
    polls_per_section: float
    fixed_polls_per_section: float
    ratio: float
    worst_ratio: float
    added_p50_s: float
    added_p99_s: float
    fixed_added_p50_s: float
    fixed_added_p99_s: float
    task_added_p50_s: float
    task_added_p99_s: float
    fixed_task_added_p50_s: float
    fixed_task_added_p99_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure(load: Load, start: Start, runs: int = 20, *, workers: int = 2) -> Figures:
    """Figures of ``runs`` seeded runs (seeds 1..runs): means of the per-run figures, and the
    worst run's ratio."""
    outs = [simulate(load, start, seed, workers=workers) for seed in range(1, runs + 1)]
    ratios = [statistics.mean(o.polls) / statistics.mean(o.fixed_polls) for o in outs]

    def mean(pick: Callable[[Outcome], float]) -> float:
        return round(statistics.mean(pick(o) for o in outs), 3)

    return Figures(
        load=load.name,
        start=start.name,
        polls_per_section=mean(lambda o: statistics.mean(o.polls)),
        fixed_polls_per_section=mean(lambda o: statistics.mean(o.fixed_polls)),
        ratio=round(statistics.mean(ratios), 3),
        worst_ratio=round(max(ratios), 3),
        added_p50_s=mean(lambda o: _percentile(o.added, 0.5)),
        added_p99_s=mean(lambda o: _percentile(o.added, 0.99)),
        fixed_added_p50_s=mean(lambda o: _percentile(o.fixed_added, 0.5)),
        fixed_added_p99_s=mean(lambda o: _percentile(o.fixed_added, 0.99)),
        task_added_p50_s=mean(lambda o: _percentile(o.task_added(), 0.5)),
        task_added_p99_s=mean(lambda o: _percentile(o.task_added(), 0.99)),
        fixed_task_added_p50_s=mean(lambda o: _percentile(o.task_added(fixed=True), 0.5)),
        fixed_task_added_p99_s=mean(lambda o: _percentile(o.task_added(fixed=True), 0.99)),
    )


def table(figures: Sequence[Figures]) -> str:
    """The figures as a Markdown table (fixed 2-s poller's figures in brackets)."""
    lines = [
        "| load | start | polls per section | ratio to fixed 2 s (worst run) "
        "| added per section p50 / p99, s | added per task p50 / p99, s |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.load} | {f.start} | {f.polls_per_section:.2f} "
            f"({f.fixed_polls_per_section:.2f}) | {f.ratio:.2f} ({f.worst_ratio:.2f}) "
            f"| {f.added_p50_s:.2f} / {f.added_p99_s:.2f} "
            f"({f.fixed_added_p50_s:.2f} / {f.fixed_added_p99_s:.2f}) "
            f"| {f.task_added_p50_s:.2f} / {f.task_added_p99_s:.2f} "
            f"({f.fixed_task_added_p50_s:.2f} / {f.fixed_task_added_p99_s:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.polling_sim", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="seeded runs per figure")
    parser.add_argument("--workers", type=int, default=2, help="workers sharing latencies")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    opts = parser.parse_args(argv)
    figures = [
        measure(load, start, opts.runs, workers=opts.workers)
        for load in (STEADY, BURST)
        for start in STARTS
    ]
    if opts.json:
        json.dump([f.as_dict() for f in figures], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
