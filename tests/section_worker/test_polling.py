"""The learned poll plan: on lognormal latencies like production's (median 20 s, sigma 0.5) it
needs at most 0.6 of the polls of a fixed 2-second interval, with no more polling-added latency
at the median."""

from __future__ import annotations

import itertools
import math
import random
import statistics

from section_worker.polling import LatencyBook
from section_worker.settings import WorkerSettings


def _polls_and_wait(book: LatencyBook, asset: str, latency: float) -> tuple[int, float]:
    for polls, at in enumerate(book.plan(asset), start=1):
        if at >= latency:
            return polls, at - latency
    raise AssertionError("unreachable")


def _fixed(latency: float, every: float = 2.0) -> tuple[int, float]:
    polls = max(1, math.ceil(latency / every))
    return polls, polls * every - latency


def test_startup_plan_until_enough_answers_are_known() -> None:
    settings = WorkerSettings(poll_initial_s=0.2, poll_factor=1.5, poll_max_s=2.0)
    book = LatencyBook(settings)
    first = list(itertools.islice(book.plan("a"), 8))
    assert first[0] == 0.2
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert gaps == sorted(gaps) and max(gaps) == 2.0
    for _ in range(settings.poll_min_samples - 1):
        book.observe("a", 19.0, 21.0)
    assert book.quantile("a", 0.5) is None
    book.observe("a", 19.0, 21.0)
    assert book.quantile("a", 0.5) == 20.0
    assert next(iter(book.plan("a"))) == 20.0
    assert next(iter(book.plan("other asset"))) == 0.2


def test_learned_plan_saves_polls_without_slower_median_answers() -> None:
    rng = random.Random(5)
    book = LatencyBook(WorkerSettings())
    draw = [rng.lognormvariate(math.log(20.0), 0.5) for _ in range(2000)]
    for latency in draw[:200]:  # learn from answers seen by the start-up schedule
        _, wait = _polls_and_wait(book, "asset", latency)
        book.observe("asset", latency + wait - 2.0, latency + wait)
    ours = [_polls_and_wait(book, "asset", latency) for latency in draw[200:]]
    fixed = [_fixed(latency) for latency in draw[200:]]
    our_polls = statistics.mean(p for p, _ in ours)
    fixed_polls = statistics.mean(p for p, _ in fixed)
    assert our_polls <= 0.6 * fixed_polls, (our_polls, fixed_polls)
    our_median_wait = statistics.median(w for _, w in ours)
    fixed_median_wait = statistics.median(w for _, w in fixed)
    assert our_median_wait <= fixed_median_wait, (our_median_wait, fixed_median_wait)


def test_the_window_forgets_old_latencies() -> None:
    book = LatencyBook(WorkerSettings(poll_window=20, poll_min_samples=10))
    for _ in range(20):
        book.observe("a", 59.0, 61.0)
    for _ in range(20):
        book.observe("a", 4.0, 6.0)
    assert book.quantile("a", 0.99) == 5.0
