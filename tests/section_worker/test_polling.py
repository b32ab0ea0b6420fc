"""Poll plans: every branch of what a plan is drawn from (nothing, a prior, a prior and
answers, answers alone), when a plan is redrawn (a job's next poll follows what is known when
it asks, also a job running against the simulator), answers held back until their prompt is
twice the slowest answer old (or their job's timeout), where a latency is placed in the
interval it is known to lie in, and the exchange's bookkeeping (what is being sent still
counts; a failed exchange keeps it)."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest

from common.platform_config import LatencyPrior
from section_worker.jobs import JobRunner, Progress, SectionJob, SectionResult, Stage
from section_worker.polling import (
    Basis,
    Latencies,
    LatencyBook,
    PollPlan,
    Score,
    Shape,
    drawn_plan,
    fresh_plan,
    prior_points,
    score,
)
from section_worker.settings import WorkerSettings
from tests.section_worker.conftest import ASSET, CREDENTIALS, MakeClient, Sim, worker_settings

A = "asset-a"
PRIOR = LatencyPrior(median_s=20, sigma=0.5)


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(
    settings: WorkerSettings | None = None,
    prior: LatencyPrior | None = None,
    clock: Clock | None = None,
    replan_s: float = 0.0,
) -> LatencyBook:
    return LatencyBook(
        settings or WorkerSettings(),
        lambda asset: prior if asset == A else None,
        clock=clock or Clock(),
        rng=random.Random(7),
        replan_s=replan_s,
    )


def polls_and_wait(plan: PollPlan, latency: float) -> tuple[int, float]:
    """Polls a job on ``plan`` makes for an answer ready ``latency`` s after its prompt, and
    how long the answer waited for the poll that found it."""
    at, polls = plan.next_after(None), 1
    while at < latency:
        at, polls = plan.next_after(at), polls + 1
    return polls, at - latency


def lognormal(seed: int, median: float, sigma: float, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def fares(known: Latencies, plan: PollPlan, settings: WorkerSettings) -> Score:
    """``plan`` (one of the family drawn_plan chooses in) scored on ``known``."""
    first = plan.times[0]
    gap = plan.times[1] - first if len(plan.times) > 1 else settings.poll_max_s
    budget = settings.poll_max_s / 2
    return score(known, first, gap, plan.times[-1], settings.poll_max_s, budget)


def test_with_the_defaults_the_fresh_plan_is_a_fixed_2s_poller() -> None:
    plan = book().plan(A)
    assert plan.basis == Basis.FRESH
    times = [plan.next_after(None)]
    for _ in range(5):
        times.append(plan.next_after(times[-1]))
    assert times == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_a_fresh_plan_grows_from_the_initial_wait_to_the_longest() -> None:
    plan = fresh_plan(WorkerSettings(poll_initial_s=0.2, poll_factor=1.5, poll_max_s=2.0))
    at: float | None = None
    times: list[float] = []
    for _ in range(10):
        at = plan.next_after(at)
        times.append(at)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[0] == pytest.approx(0.2)
    assert gaps == sorted(gaps)
    assert max(gaps) == pytest.approx(2.0) and gaps[-1] == pytest.approx(2.0)


def test_fewer_answers_than_needed_without_a_prior_poll_as_fresh() -> None:
    settings = WorkerSettings()
    known = book(settings)
    for latency in lognormal(1, 20, 0.5, settings.poll_min_samples - 1):
        known.observe(A, latency - 1, latency)
    assert known.plan(A).basis == Basis.FRESH
    known.observe(A, 19, 21)
    learned = known.plan(A)
    assert learned.basis == Basis.LEARNED
    assert learned.next_after(None) > 4.0  # no poll is spent where no answer comes


def test_a_prior_alone_draws_the_plan_from_its_quantiles() -> None:
    plan = book(prior=PRIOR).plan(A)
    assert plan.basis == Basis.PRIOR
    first = plan.next_after(None)
    assert 12.0 < first < 25.0  # around the middle of lognormal(20, 0.5), not at 2 s
    assert plan.next_after(first) - first < 2.0  # dense where answers come
    # Another asset has no prior: fresh.
    assert book(prior=PRIOR).plan("other").basis == Basis.FRESH


def test_answers_replace_the_prior_one_for_one() -> None:
    settings = WorkerSettings()
    fast = lognormal(2, 5, 0.3, settings.poll_min_samples)
    with_prior, without = book(settings, PRIOR), book(settings)
    firsts = [with_prior.plan(A).next_after(None)]
    for i, latency in enumerate(fast, start=1):
        for known in (with_prior, without):
            known.observe(A, latency, latency)
        if i == len(fast) // 2:
            half = with_prior.plan(A)
            assert half.basis == Basis.MIXED
            firsts.append(half.next_after(None))
    learned = with_prior.plan(A)
    assert learned.basis == Basis.LEARNED
    firsts.append(learned.next_after(None))
    # The first poll moves from the prior's (20 s) to the answers' (5 s) as they come...
    assert firsts[0] > firsts[1] > firsts[2]
    # ...and once there are enough, the prior has no say at all.
    assert learned == without.plan(A)


def test_a_jobs_next_poll_follows_what_is_known_when_it_asks() -> None:
    settings = WorkerSettings()
    known = book(settings)
    assert known.next_poll(A, None) == 2.0
    assert known.next_poll(A, 2.0) == 4.0  # the job polled at 2 s: fresh, next at 4 s
    for latency in lognormal(3, 20, 0.5, settings.poll_min_samples):
        known.observe(A, latency, latency)
    # The same job, asking again after its poll at 4 s, now skips to the learned plan.
    learned = known.plan(A)
    assert known.next_poll(A, 4.0) == learned.next_after(4.0) > 10.0


def test_a_plan_drawn_from_latencies_is_redrawn_at_most_once_per_interval() -> None:
    clock = Clock()
    settings = WorkerSettings()
    known = book(settings, clock=clock, replan_s=1.0)
    for latency in lognormal(4, 20, 0.5, settings.poll_min_samples):
        known.observe(A, latency, latency)
    before = known.plan(A)
    for _ in range(settings.poll_min_samples):
        known.observe(A, 4.0, 5.0)  # the platform got much faster
    assert known.plan(A) is before  # within the interval: the plan drawn a moment ago
    clock.now += 1.0
    after = known.plan(A)
    assert after.next_after(None) < before.next_after(None)


def test_a_fresh_plan_is_checked_again_at_every_change() -> None:
    clock = Clock()
    settings = WorkerSettings()
    known = book(settings, clock=clock, replan_s=60.0)
    assert known.plan(A).basis == Basis.FRESH
    for latency in lognormal(5, 20, 0.5, settings.poll_min_samples):
        known.observe(A, latency, latency)
    assert known.plan(A).basis == Basis.LEARNED  # no wait for the interval


def test_an_answer_counts_once_its_prompt_is_twice_the_slowest_answer_old() -> None:
    clock = Clock()
    known = book(clock=clock)
    known.observe(A, 2.0, 3.0, hold_s=120)  # prompt sent 3 s ago, slowest 3 s: counts at 6 s
    assert known.samples(A) == []
    assert known.pending() == 1
    clock.now += 2.9
    assert known.plan(A).basis == Basis.FRESH and known.samples(A) == []
    clock.now += 0.2
    known.plan(A)  # asking for a plan counts what is due
    assert len(known.samples(A)) == 1
    assert 2.0 <= known.samples(A)[0] <= 3.0


def test_a_slower_answer_seen_meanwhile_holds_a_quick_one_back_longer() -> None:
    clock = Clock()
    known = book(clock=clock)
    known.observe(A, 0.0, 1.0, hold_s=120)  # alone, it would count when 2 s old, 1 s from now
    clock.now += 0.5
    known.observe(A, 9.0, 10.0, hold_s=120)  # slowest now 10 s: each counts when 20 s old
    clock.now += 18.4  # the quick answer's prompt is 19.9 s old, the slow one's 28.4 s
    known.plan(A)
    assert len(known.samples(A)) == 1 and known.samples(A)[0] > 9.0
    clock.now += 0.2
    known.plan(A)
    assert len(known.samples(A)) == 2


def test_the_jobs_timeout_bounds_how_long_an_answer_is_held() -> None:
    clock = Clock()
    known = book(clock=clock)
    known.observe(A, 29.0, 30.0, hold_s=40)  # twice the slowest is 60 s; the timeout 40 s
    clock.now += 9.9
    known.plan(A)
    assert known.samples(A) == []
    clock.now += 0.2
    known.plan(A)
    assert len(known.samples(A)) == 1
    known.observe(A, 29.0, 30.0, hold_s=0)  # no hold: counts at once
    assert len(known.samples(A)) == 2


def test_a_latency_is_placed_within_its_interval_by_the_shape_known() -> None:
    even = book()
    for _ in range(200):
        even.observe("b", 0.0, 20.0)
    # Nothing known of "b": evenly within the interval.
    assert 7.0 < statistics.mean(even.samples("b")) < 13.0
    shaped = book(prior=PRIOR)
    shaped.plan(A)  # the prior's shape is known once a plan was drawn
    for _ in range(200):
        shaped.observe(A, 0.0, 20.0)
    values = shaped.samples(A)
    assert all(0.0 <= v <= 20.0 for v in values)
    # lognormal(20, 0.5) below 20 s lies mostly in 10-20 s, not evenly from 0.
    assert statistics.mean(values) > 13.0


def test_a_shape_is_fitted_only_from_enough_positive_latencies() -> None:
    assert Shape.fitted([5.0]) is None
    assert Shape.fitted([0.0, 0.0, 0.0]) is None
    fitted = Shape.fitted(lognormal(6, 20, 0.5, 2000))
    assert fitted is not None
    assert math.exp(fitted.mu) == pytest.approx(20, rel=0.05)
    assert fitted.sigma == pytest.approx(0.5, rel=0.1)


def test_an_interval_the_shape_puts_nothing_in_is_filled_evenly() -> None:
    shape = Shape(mu=math.log(20), sigma=0.05)
    rng = random.Random(1)
    values = [shape.draw_within(100.0, 200.0, rng) for _ in range(100)]
    assert all(100.0 <= v <= 200.0 for v in values)
    assert 130 < statistics.mean(values) < 170


def test_the_window_forgets_old_latencies() -> None:
    known = book(WorkerSettings(poll_window=20, poll_min_samples=10))
    for _ in range(20):
        known.observe(A, 60.0, 60.0)
    for _ in range(20):
        known.observe(A, 5.0, 5.0)
    assert known.samples(A) == [5.0] * 20


def test_a_next_poll_is_never_sooner_than_half_a_gap_after_the_last() -> None:
    plan = PollPlan((10.0, 11.0, 12.0, 13.0), late_gap_s=2.0, min_gap_s=0.5, basis=Basis.LEARNED)
    assert plan.next_after(None) == 10.0
    assert plan.next_after(10.0) == 11.0
    assert plan.next_after(10.6) == 12.0  # 11.0 would come 0.4 s after the last poll
    assert plan.next_after(13.0) == 15.0  # past the planned polls: every late gap
    assert plan.next_after(20.3) == 22.3


def test_score_counts_polls_and_the_share_found_within_the_budget() -> None:
    known = Latencies([(1.0, 1.0), (5.5, 1.0), (30.0, 1.0)])
    # First poll at 4 s, then every 2 s up to 10 s (4, 6, 8, 10), then every 4 s.
    fared = score(known, first=4.0, gap=2.0, until=10.0, late_gap=4.0, budget=1.0)
    # 1 s: found by the first poll, 3 s late; 5.5 s: second poll, between polls 2 s apart
    # (half the time within 1 s); 30 s: 4 planned + 5 late polls (14 .. 30), 4 s apart.
    assert fared.polls == pytest.approx((1 + 2 + 9) / 3)
    assert fared.within_budget == pytest.approx((0 + 0.5 + 0.25) / 3)


def test_a_drawn_plan_keeps_its_median_wait_within_half_the_fixed_gap() -> None:
    settings = WorkerSettings()
    latencies = lognormal(8, 20, 0.5, 4000)
    plan = drawn_plan(Latencies([(v, 1.0) for v in latencies[:200]]), settings, Basis.LEARNED)
    ours = [polls_and_wait(plan, latency) for latency in latencies[200:]]
    fixed = [max(1, math.ceil(latency / 2)) for latency in latencies[200:]]
    assert statistics.mean(p for p, _ in ours) <= 0.6 * statistics.mean(fixed)
    assert statistics.median(w for _, w in ours) <= settings.poll_max_s / 2


def test_fewer_measured_answers_ask_for_a_safer_plan() -> None:
    settings = WorkerSettings()
    sample = Latencies([(v, 1.0) for v in lognormal(9, 20, 0.5, 40)])
    trusted = fares(sample, drawn_plan(sample, settings, Basis.PRIOR, measured=0), settings)
    doubted = fares(sample, drawn_plan(sample, settings, Basis.LEARNED), settings)  # 40 measured
    assert trusted.within_budget >= 0.55
    assert doubted.within_budget >= 0.55 + 0.5 * math.sqrt(0.25 / 40) - 1e-9
    assert doubted.polls >= trusted.polls


def test_the_prior_points_are_its_quantiles() -> None:
    points = prior_points(PRIOR, 101)
    assert points == sorted(points)
    assert points[50] == pytest.approx(20.0)
    assert points[0] < 20 * math.exp(-0.5 * 2) < points[10]


def test_what_is_being_shared_still_counts_and_a_failed_exchange_keeps_it() -> None:
    known = book(WorkerSettings(poll_window=10, poll_min_samples=4))
    for latency in (1.0, 2.0, 3.0):
        known.observe(A, latency, latency)
    sending = known.begin_share()
    assert sending == {A: [1.0, 2.0, 3.0]}
    known.observe(A, 4.0, 4.0)
    assert known.samples(A) == [1.0, 2.0, 3.0, 4.0]  # on their way, still known
    known.end_share(None)  # the store failed: sent again next time
    assert known.begin_share() == {A: [1.0, 2.0, 3.0, 4.0]}
    known.end_share({A: [9.0, 1.0, 2.0, 3.0, 4.0], "b": [7.0]})  # a peer's 9 s, and "b"
    assert known.samples(A) == [9.0, 1.0, 2.0, 3.0, 4.0]
    assert known.samples("b") == [7.0]
    assert known.pending() == 0
    assert known.begin_share() == {}


async def test_a_running_job_switches_to_a_plan_learned_while_it_waits(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    overrides = {"poll_initial_s": 0.5, "poll_max_s": 0.5, "job_timeout_s": 30.0}
    await sim.configure(assets={ASSET: {"latency_median_s": 3.0, "latency_sigma": 0.0}})
    client = make_client(**overrides)
    settings = worker_settings(sim, overrides)
    latencies = LatencyBook(settings, replan_s=0.0)
    runner = JobRunner(client, settings, latencies=latencies)
    job = SectionJob(
        job_id="t:s",
        task_id="t",
        section="top_movers",
        asset_id=ASSET,
        record_json='{"top_movers_data": "AAPL +1%"}',
        tenant=CREDENTIALS.tenant,
        username=CREDENTIALS.username,
        access_token=token,
    )
    result: SectionResult | None = None
    try:
        async for event in runner.run(job):
            if isinstance(event, Progress) and event.stage is Stage.POLLING and event.polls == 1:
                # Its first poll (0.5 s) found nothing, and it planned its second (1 s) on the
                # fresh plan; now answers of 2.9-3 s come in.
                for _ in range(settings.poll_min_samples):
                    latencies.observe(ASSET, 2.9, 3.0)
            if isinstance(event, SectionResult):
                result = event
    finally:
        await runner.close()
    assert result is not None and result.success, result
    assert latencies.plan(ASSET).basis == Basis.LEARNED
    polls = result.platform_calls - 2  # create and send
    # 0.5 s, 1 s, then the learned plan (about 3 s, and one more): on the fresh plan it
    # would have polled every 0.5 s until 3 s, 6 polls at least.
    assert 3 <= polls <= 4, polls


def test_a_runner_polls_on_the_priors_of_its_configuration(
    sim: Sim, make_client: MakeClient, tmp_path: Path
) -> None:
    body = json.loads((Path(__file__).resolve().parents[2] / "config.json").read_text())
    body["assets"][ASSET]["latency"] = {"median_s": 20, "sigma": 0.5}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(body))
    settings = worker_settings(sim, {"config_path": path, "poll_initial_s": 2, "poll_max_s": 2})
    runner = JobRunner(make_client(), settings)
    assert runner.latencies.plan(ASSET).basis == Basis.PRIOR
    assert runner.latencies.next_poll(ASSET, None) > 10.0
    other = next(a for a in sorted(settings.known_assets()) if a != ASSET)
    assert runner.latencies.plan(other).basis == Basis.FRESH


def test_past_its_planned_times_a_plan_polls_a_gap_after_the_last_answer_came() -> None:
    fresh = fresh_plan(WorkerSettings())  # every 2 s: a fixed poller
    assert fresh.next_after(2.0) == 4.0
    assert fresh.next_after(2.0, 2.3) == pytest.approx(4.3)  # a slow answer pushes it back
    assert fresh.next_after(2.0, 1.9) == 4.0  # never sooner than a gap after the planned time
    plan = PollPlan((10.0, 11.0, 12.0), late_gap_s=2.0, min_gap_s=0.5, basis=Basis.PRIOR)
    assert plan.next_after(10.0, 10.4) == 11.0  # within the planned times: the plan's
    assert plan.next_after(12.0, 12.3) == pytest.approx(14.3)
