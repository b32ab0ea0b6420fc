"""When to poll the platform for an answer: a plan per asset, drawn from what the worker knows
of the asset's answer latencies at the moment a job asks.

A job asks :meth:`LatencyBook.next_poll` before each poll (not once, when its prompt is sent),
so a job sent before anything was known switches to a drawn plan as soon as the worker knows
enough. What a plan is drawn from, by precedence:

1. **Measured answers** of the asset: the last ``WORKER_POLL_WINDOW`` (200), every worker's,
   shared through the store (:mod:`section_worker.latency_sharing`); at least
   ``WORKER_POLL_MIN_SAMPLES`` (20) of them, or fewer with a prior (2).
2. **The asset's prior** in ``config.json`` (``"latency": {"median_s": 20, "sigma": 0.5}``,
   :class:`common.platform_config.LatencyPrior`), drawn as 200 quantiles weighing as much as
   ``WORKER_POLL_MIN_SAMPLES`` answers; each measured answer replaces one of them, so 5
   answers and the prior weigh 5 to 15, and from 20 answers on the prior is gone.
3. **Nothing** (a new asset without a prior, a fresh stack): the fresh-start plan, first poll
   at ``WORKER_POLL_INITIAL_S``, then gaps growing by ``WORKER_POLL_FACTOR`` up to
   ``WORKER_POLL_MAX_S``. With the defaults (2 s, 2 s) it *is* a fixed 2-s poller: never
   worse than one, in polls or in waiting.

**What is measured.** A latency is known only to lie between the last poll that said
IN_PROGRESS and the poll that brought the answer. It is placed in that interval by the
lognormal the asset is believed to follow (through the median and 90th percentile of what is
known, else the prior; evenly when nothing is known): midpoints would pile the answers onto the
poll grid, and an answer found by a plan's first poll may have come any time before it.

**When an answer counts.** Counted at once, the quick answers of a burst would be known before
its slow ones, and plans drawn from them make the slow ones wait: in simulation a steady run
with a true prior waits 1.63 s at the median instead of 0.89 (``bench/polling_sim.py``). An
answer therefore counts only once its prompt is older than the longest any answer sent with it
can still take: the job's timeout, or sooner, twice the slowest answer of the asset this
worker has seen (``HORIZON_FACTOR``). By then every answer sent with it is in, except one
slower than twice all seen so far. The slowest grows as slow answers come, so a slow asset's
answers wait about twice their slowest (a fresh stack polls as a fixed poller for that long),
while the answers of an asset that answers at once count within seconds. What they teach comes
more slowly: an answer found by a plan's first poll is only known to have come before it, so
the first poll moves down a little with each window of answers (in a simulation of one worker
taking 24 instant answers a second from a fresh start, from 2 s to 1.5 s in 4 s and to 0.8 s in
a minute). A prior in ``config.json`` is what makes such an asset's first poll quick at once.
A restarted worker reads its peers' answers at once.

**The plan.** A plan drawn from latencies is the cheapest of a family: first poll at a
quantile of the latencies (0, 2.5, .. 87.5 %), then every *gap* up to their 97th percentile,
then every ``WORKER_POLL_MAX_S`` as when nothing is known. The *wait budget* is half of
``WORKER_POLL_MAX_S`` — the median wait of a fixed poller at that interval (1 s at 2 s) — and a
plan must find 55 % of the answers within it, so that its median wait stays under the fixed
poller's even in a run whose latencies fall a little differently; with measured answers the
share asked for is half a standard error higher (0.55 + 0.25 / sqrt(n)), so that picking the
cheapest of many plans does not pick one that was lucky on the sample. For each first
quantile the longest gap that keeps that share is solved for (an answer between two polls
``g`` apart counts as found within the budget with probability ``budget / g``: where it falls
between them is the jitter's), and the plan of fewest expected polls wins. A job that already
polled takes the plan's next poll at least half a gap after its last one. A drawn plan is
recomputed at most once a second per asset (about 3 ms for 200 latencies).

**What it costs and saves**, measured by ``python -m bench.polling_sim`` (the plan code itself
in virtual time, two workers sharing latencies, 20 seeded runs; lognormal latencies capped at
45 s; polls per section against a fixed 2-s poller's on the same latencies, and the
polling-added latency, answer found minus ready):

=================================================  =================  ==========================
load and what is known                              polls (fixed 2 s)  added p50 / p99, s
=================================================  =================  ==========================
steady, median 20 s: nothing (fresh stack)          1.00x              1.00 / 1.97 (1.00 / 1.97)
steady: prior = the true latencies                  0.56x              0.89 / 12.8 (1.00 / 1.97)
steady: 200 measured answers                        0.58x              0.91 / 11.6 (1.00 / 1.97)
steady: prior 2x too slow                           0.14x              17.6 / 30.9 (1.00 / 1.97)
steady: prior 2x too fast                           1.00x              0.65 / 3.09 (1.00 / 1.97)
burst, median 5 s: nothing (fresh stack)            1.00x              0.99 / 1.98 (0.99 / 1.98)
burst: prior = the true latencies                   0.68x              0.93 / 3.83 (0.99 / 1.98)
=================================================  =================  ==========================

The price of fewer polls is the tail: about half the answers come before a drawn plan's first
poll and wait for it (p99 of 12 s per section, 4-5 s per three-section task, against 2 s). A
prior set too slow is the costly mistake (answers wait for a first poll long after they are
ready, until measured answers replace it); one too fast costs polls, about a fixed poller's
(1.00x steady, 1.02x burst).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist

from common.platform_config import LatencyPrior
from section_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

# Quantiles of the known latencies tried for the first poll of a plan drawn from them.
FIRST_QUANTILES = tuple(i / 40 for i in range(36))  # 0, 0.025, .. 0.875
KNOWN_UP_TO = 0.97  # quantile past which a plan polls as if nothing were known
WAIT_SHARE = 0.5  # the wait budget, as a share of poll_max_s: a fixed poller's median wait
QUICK_SHARE = 0.55  # answers a plan must find within the budget: its median wait, with room
MARGIN_Z = 0.5  # standard errors of the measured share within budget asked above a half
PRIOR_POINTS = 200  # quantiles a prior is drawn as
REPLAN_S = 1.0  # shortest time between two computations of one asset's plan
_MIN_SIGMA = 0.02
_Z90 = NormalDist().inv_cdf(0.9)
_MIN_GAP_S = 1e-3  # two polls of one job are never closer
_MAX_POLLS_PLANNED = 2000
_HELD_MAX = 100_000  # answers held back per asset at most
# An answer counts once its prompt is this many times the slowest answer seen old, or the job's
# timeout if sooner (module docstring, "When an answer counts").
HORIZON_FACTOR = 2.0


class Basis(StrEnum):
    """What a plan is drawn from."""

    FRESH = "fresh"  # nothing known: WORKER_POLL_INITIAL_S .. WORKER_POLL_MAX_S
    PRIOR = "prior"  # the asset's prior alone
    MIXED = "prior and answers"  # some answers, the prior filling in for the rest
    LEARNED = "answers"  # measured answers alone


@dataclass(frozen=True)
class PollPlan:
    """Poll times, in seconds after the prompt was sent: ``times`` in order, then every
    ``late_gap_s`` after the last poll made."""

    times: tuple[float, ...]
    late_gap_s: float
    min_gap_s: float  # a poll is never planned sooner than this after the job's previous one
    basis: Basis

    def next_after(self, last_s: float | None, made_s: float | None = None) -> float:
        """When to poll next, for a job whose last poll was planned at ``last_s`` (None: none
        yet) and made at ``made_s`` (its answer came then; ``last_s`` when not given). Past
        the planned times the next poll is ``late_gap_s`` after the last one was made, as a
        fixed poller's: a slow answer pushes it back rather than bringing the next closer."""
        if last_s is None:
            return self.times[0] if self.times else self.late_gap_s
        i = bisect.bisect_right(self.times, last_s + self.min_gap_s)
        if i < len(self.times):
            return self.times[i]
        return max(last_s, made_s if made_s is not None else last_s) + self.late_gap_s

    def describe(self) -> str:
        """A line for the log: the planned polls, then the late gap."""
        if not self.times:
            return f"every {self.late_gap_s:g}s"
        if len(self.times) == 1:
            return f"first poll at {self.times[0]:.2f}s, then every {self.late_gap_s:g}s"
        gaps = [b - a for a, b in itertools.pairwise(self.times)]
        return (
            f"{len(self.times)} polls from {self.times[0]:.2f}s to {self.times[-1]:.2f}s "
            f"(gaps {min(gaps):.2f}-{max(gaps):.2f}s), then every {self.late_gap_s:g}s"
        )


def fresh_plan(settings: WorkerSettings) -> PollPlan:
    """The plan when nothing is known: ``poll_initial_s``, gaps growing by ``poll_factor`` up to
    ``poll_max_s``, then every ``poll_max_s``."""
    times: list[float] = []
    at = gap = settings.poll_initial_s
    while gap < settings.poll_max_s and len(times) < _MAX_POLLS_PLANNED:
        times.append(at)
        gap = min(gap * settings.poll_factor, settings.poll_max_s)
        at += gap
    times.append(at)
    return PollPlan(tuple(times), settings.poll_max_s, _MIN_GAP_S, Basis.FRESH)


def prior_points(prior: LatencyPrior, count: int = PRIOR_POINTS) -> list[float]:
    """The prior's quantiles at ``(i + 0.5) / count``: ``count`` equally likely latencies."""
    normal = NormalDist()
    return [
        prior.median_s * math.exp(prior.sigma * normal.inv_cdf((i + 0.5) / count))
        for i in range(count)
    ]


@dataclass(frozen=True)
class Score:
    """How a plan fares on known latencies: mean polls, and the share of answers found within
    the wait budget (the plan's median wait is within it when this is at least a half)."""

    polls: float
    within_budget: float


class Latencies:
    """Weighted latencies, sorted, with their weighted quantiles and counts."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        points = sorted(points)
        self.values = [v for v, _ in points]
        self.weights = [w for _, w in points]
        self.total = sum(self.weights)
        self._cumulative = [0.0, *itertools.accumulate(self.weights)]

    def quantile(self, q: float) -> float:
        i = bisect.bisect_left(self._cumulative, q * self.total - 1e-12, lo=1) - 1
        return self.values[min(max(i, 0), len(self.values) - 1)]

    def weight(self, low: float, high: float) -> float:
        """The weight of the latencies in ``(low, high]``."""
        i = bisect.bisect_right(self.values, low)
        j = bisect.bisect_right(self.values, high)
        return self._cumulative[j] - self._cumulative[i] if j > i else 0.0


def score(
    known: Latencies, first: float, gap: float, until: float, late_gap: float, budget: float
) -> Score:
    """Mean polls and share within ``budget`` of the plan "first poll at ``first``, then every
    ``gap`` until ``until`` is passed, then every ``late_gap``" on ``known``.

    An answer that comes before the first poll waits for it: its wait is known. One that comes
    later falls somewhere between two polls ``g`` apart, at no particular place (the jitter of
    sending and polling decides), so it counts as found within the budget with probability
    ``min(1, budget / g)`` — counting it 0 or 1 by where the sample happens to lie would let
    a plan fit its gap to the sample's accidents."""
    dense = max(0, math.ceil((until - first) / gap - 1e-9))
    last = first + dense * gap
    polls = quick = 0.0
    for x, w in zip(known.values, known.weights, strict=True):
        if x <= first:
            polls += w
            quick += w if first - x <= budget else 0.0
        elif x <= last:
            polls += w * (1 + math.ceil((x - first) / gap - 1e-9))
            quick += w * min(1.0, budget / gap)
        else:
            polls += w * (1 + dense + math.ceil((x - last) / late_gap - 1e-9))
            quick += w * min(1.0, budget / late_gap)
    return Score(polls / known.total, quick / known.total)


def drawn_plan(
    known: Latencies, settings: WorkerSettings, basis: Basis, *, measured: int | None = None
) -> PollPlan:
    """The cheapest plan of the family that finds ``QUICK_SHARE`` of ``known`` within the wait
    budget (half ``poll_max_s``), and half a standard error more of a sample of ``measured``
    answers (all of ``known`` by default; 0 for a prior, as exact as it is believed): for each
    first poll of the grid, the longest gap that keeps that share (:func:`score`'s count,
    solved for the gap), then the one of fewest polls."""
    budget = WAIT_SHARE * settings.poll_max_s
    late = settings.poll_max_s
    until = known.quantile(KNOWN_UP_TO)
    late_quick = min(1.0, budget / late)
    # The share found within the budget is measured on a sample: ask for half a standard
    # error more, so that picking the best of many plans does not pick one lucky on it.
    sampled = known.total if measured is None else measured
    wanted = QUICK_SHARE + MARGIN_Z * math.sqrt(0.25 * sampled) / known.total
    # Polling every budget from the first latency on finds nearly all within it: the plan
    # to beat, and the one kept if nothing cheaper keeps the budget.
    safe = max(known.quantile(0.0), _MIN_GAP_S)
    best = (score(known, safe, budget, until, late, budget).polls, safe, budget)
    for q in FIRST_QUANTILES:
        first = max(known.quantile(q), _MIN_GAP_S)
        early = known.weight(first - budget, first)  # found by the first poll in budget
        dense = known.weight(first, until)
        later = known.weight(until, math.inf) * late_quick
        needed = wanted * known.total - early - later
        if needed <= 0:
            gap = late
        elif dense <= needed:
            continue  # even a poll every budget does not find enough in it
        else:
            gap = min(late, budget * dense / needed)
        fared = score(known, first, gap, until, late, budget)
        if fared.within_budget >= wanted - 1e-9 and fared.polls < best[0]:
            best = (fared.polls, first, gap)
    _, first, gap = best
    times = [first]
    while times[-1] < until and len(times) < _MAX_POLLS_PLANNED:
        times.append(times[-1] + gap)
    return PollPlan(tuple(times), late, max(gap / 2, _MIN_GAP_S), basis)


@dataclass(frozen=True)
class Shape:
    """A lognormal the asset's latencies are taken to follow, to place a latency within the
    interval it is known to lie in: its natural log's mean and sigma."""

    mu: float
    sigma: float

    @classmethod
    def of_prior(cls, prior: LatencyPrior) -> Shape:
        return cls(math.log(prior.median_s), max(prior.sigma, _MIN_SIGMA))

    @classmethod
    def fitted(cls, values: list[float]) -> Shape | None:
        """The lognormal through the median and 90th percentile of ``values`` (None when
        they do not describe one: too few, or not positive)."""
        ordered = sorted(values)
        if len(ordered) < 2:
            return None
        median = ordered[len(ordered) // 2]
        high = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        if median <= 0 or high <= 0:
            return None
        return cls(math.log(median), max(math.log(high / median) / _Z90, _MIN_SIGMA))

    def draw_within(self, low: float, high: float, rng: random.Random) -> float:
        """A latency drawn from this lognormal, restricted to ``[low, high]``."""
        normal = NormalDist(self.mu, self.sigma)
        bottom = normal.cdf(math.log(low)) if low > 0 else 0.0
        top = normal.cdf(math.log(high)) if high > 0 else 0.0
        if top - bottom < 1e-9:  # the shape puts nothing there: no better guess than even
            return rng.uniform(low, high)
        u = min(max(rng.uniform(bottom, top), 1e-12), 1 - 1e-12)
        return min(max(math.exp(normal.inv_cdf(u)), low), high)


@dataclass
class _Asset:
    """What one asset's latencies are known to be on this worker."""

    shared: list[float] = field(default_factory=list)  # the window last read from the store
    sending: list[float] = field(default_factory=list)  # on their way to the store
    unshared: list[float] = field(default_factory=list)  # measured here since
    # Heap of answers not counted yet: (prompt sent at, longest hold, latency).
    held: list[tuple[float, float, float]] = field(default_factory=list)
    slowest_s: float = 0.0  # the latest an answer of the asset was found here, after its prompt
    version: int = 0
    plan: PollPlan | None = None
    shape: Shape | None = None
    planned_version: int = -1
    planned_at: float = -math.inf


class LatencyBook:
    """Recent answer latencies per asset (this worker's and its peers'), and the poll plans
    drawn from them."""

    def __init__(
        self,
        settings: WorkerSettings,
        priors: Callable[[str], LatencyPrior | None] = lambda asset: None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        replan_s: float = REPLAN_S,
    ) -> None:
        """``priors`` gives an asset's prior (config.json); ``clock`` (monotonic seconds),
        ``rng`` (where in its interval a latency is taken to lie) and ``replan_s`` (shortest
        time between two computations of a plan drawn from latencies) are replaceable for
        tests and the simulation."""
        self._settings = settings
        self._priors = priors
        self._clock = clock
        self._replan_s = replan_s
        self._rng = rng if rng is not None else random.Random()
        self._assets: dict[str, _Asset] = {}
        self._fresh = fresh_plan(settings)

    def _asset(self, asset_id: str) -> _Asset:
        found = self._assets.get(asset_id)
        if found is None:
            found = self._assets[asset_id] = _Asset()
        return found

    def observe(
        self, asset_id: str, not_before_s: float, seen_at_s: float, *, hold_s: float = 0.0
    ) -> None:
        """An answer was not ready ``not_before_s`` after its prompt was sent but was at
        ``seen_at_s``. It counts once its prompt is older than twice the slowest answer of the
        asset seen here, or than ``hold_s`` (give the job's timeout: no answer sent with it can
        take longer), whichever comes first; at once when ``hold_s`` is 0."""
        asset = self._asset(asset_id)
        value = self._place(asset, not_before_s, seen_at_s)
        asset.slowest_s = max(asset.slowest_s, seen_at_s)
        heapq.heappush(asset.held, (self._clock() - seen_at_s, hold_s, value))
        del asset.held[_HELD_MAX:]  # keeps a heap: the tail of one holds no parent
        self._release(asset)

    def _place(self, asset: _Asset, not_before_s: float, seen_at_s: float) -> float:
        """Where in ``[not_before_s, seen_at_s]`` the latency is taken to be."""
        low, high = sorted((max(0.0, not_before_s), max(0.0, seen_at_s)))
        if asset.shape is None:
            return self._rng.uniform(low, high)
        return asset.shape.draw_within(low, high, self._rng)

    def _release(self, asset: _Asset) -> None:
        """Counts the held answers whose time has come (oldest prompt first)."""
        now = self._clock()
        horizon = HORIZON_FACTOR * asset.slowest_s
        ready: list[float] = []
        while asset.held and asset.held[0][0] + min(asset.held[0][1], horizon) <= now:
            ready.append(heapq.heappop(asset.held)[2])
        if ready:
            self._count(asset, ready)

    def _count(self, asset: _Asset, values: list[float]) -> None:
        asset.unshared.extend(values)
        del asset.unshared[: -self._settings.poll_window]  # bounded while sharing fails
        asset.version += 1

    def samples(self, asset_id: str) -> list[float]:
        """The asset's known latencies, oldest first (at most ``poll_window``)."""
        asset = self._assets.get(asset_id)
        if asset is None:
            return []
        known = asset.shared + asset.sending + asset.unshared
        return known[-self._settings.poll_window :]

    def plan(self, asset_id: str) -> PollPlan:
        """The asset's plan from what is known now (recomputed at most once a second)."""
        asset = self._asset(asset_id)
        self._release(asset)
        now = self._clock()
        if asset.plan is not None and (
            asset.planned_version == asset.version
            # A plan drawn from latencies costs milliseconds: not redrawn for every answer.
            or (asset.plan.basis != Basis.FRESH and now - asset.planned_at < self._replan_s)
        ):
            return asset.plan
        plan, asset.shape = self._draw(asset_id)
        if asset.plan is None or plan.basis != asset.plan.basis:
            logger.info("asset %s: polls on %s: %s", asset_id, plan.basis, plan.describe())
        asset.plan, asset.planned_version, asset.planned_at = plan, asset.version, now
        return plan

    def next_poll(self, asset_id: str, last_s: float | None, made_s: float | None = None) -> float:
        """When a job on ``asset_id`` polls next, in seconds after its prompt was sent, given
        its last poll planned at ``last_s`` (None: none yet) and made at ``made_s``
        (:meth:`PollPlan.next_after`)."""
        return self.plan(asset_id).next_after(last_s, made_s)

    def _draw(self, asset_id: str) -> tuple[PollPlan, Shape | None]:
        """The asset's plan and the shape its latencies are taken to follow."""
        known = self.samples(asset_id)
        needed = self._settings.poll_min_samples
        if len(known) >= needed:
            latencies = Latencies([(v, 1.0) for v in known])
            plan = drawn_plan(latencies, self._settings, Basis.LEARNED)
            return plan, Shape.fitted(known)
        prior = self._priors(asset_id)
        if prior is None:
            return self._fresh, None
        missing = needed - len(known)
        points = prior_points(prior)
        weighted = [(v, 1.0) for v in known] + [(p, missing / len(points)) for p in points]
        basis = Basis.MIXED if known else Basis.PRIOR
        plan = drawn_plan(Latencies(weighted), self._settings, basis, measured=len(known))
        return plan, Shape.of_prior(prior)

    # -- sharing (section_worker.latency_sharing) -------------------------------------------

    def pending(self) -> int:
        """Latencies measured here that the store has not had yet (held back or unsent)."""
        return sum(len(a.held) + len(a.unshared) + len(a.sending) for a in self._assets.values())

    def begin_share(self) -> dict[str, list[float]]:
        """The latencies measured here since the last exchange, per asset, now on their way to
        the store (they still count until :meth:`end_share`)."""
        out: dict[str, list[float]] = {}
        for asset_id, asset in self._assets.items():
            self._release(asset)
            if asset.unshared:
                asset.sending, asset.unshared = asset.sending + asset.unshared, []
                out[asset_id] = list(asset.sending)
        return out

    def end_share(self, windows: dict[str, list[float]] | None) -> None:
        """The exchange is over: ``windows`` are the merged recent latencies per asset read
        back from the store (they hold what was sent), or None when it failed (what was sent
        waits for the next exchange)."""
        keep = self._settings.poll_window
        for asset in self._assets.values():
            if asset.sending and windows is None:
                asset.unshared = (asset.sending + asset.unshared)[-keep:]
            asset.sending = []
        for asset_id, window in (windows or {}).items():
            asset = self._asset(asset_id)
            if window[-keep:] != asset.shared:
                asset.shared = window[-keep:]
                asset.version += 1
