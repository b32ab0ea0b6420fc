"""The worker's metrics: each job's outcome and duration, and its jobs in flight and slots as a
scrape sees them (summed over the job runners of the process)."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import REGISTRY

from section_worker import metrics
from section_worker.jobs import Load, SectionResult


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (SectionResult(success=True, duration_s=1.5), "completed"),
        (SectionResult(success=False, error="timed out", duration_s=2.0), "failed"),
        (SectionResult(success=False, token_expired=True, duration_s=0.5), "token_expired"),
    ],
)
def test_a_finished_job_counts_by_outcome_with_its_duration(
    result: SectionResult, outcome: str
) -> None:
    count = value("wealthai_worker_jobs_finished_total", outcome=outcome)
    timed = value("wealthai_worker_job_duration_seconds_sum", outcome=outcome)
    metrics.job_finished(result)
    assert value("wealthai_worker_jobs_finished_total", outcome=outcome) == count + 1
    assert value("wealthai_worker_job_duration_seconds_sum", outcome=outcome) == pytest.approx(
        timed + result.duration_s
    )


class Runner:
    """Stands for a job runner: what a scrape reads of it is its load."""

    def __init__(self, capacity: int, in_flight: int, accepting: bool) -> None:
        self.state = Load(capacity, in_flight, accepting)

    def load(self) -> Load:
        return self.state


def test_a_scrape_reads_the_runners_load() -> None:
    gc.collect()  # the runners of earlier tests no longer count
    base = {
        name: value(name)
        for name in (
            "wealthai_worker_jobs_in_flight",
            "wealthai_worker_job_slots",
            "wealthai_worker_accepting_jobs",
        )
    }
    busy, draining = Runner(16, 5, True), Runner(8, 2, False)
    metrics.watch(busy)  # type: ignore[arg-type]
    metrics.watch(draining)  # type: ignore[arg-type]
    assert value("wealthai_worker_jobs_in_flight") == base["wealthai_worker_jobs_in_flight"] + 7
    assert value("wealthai_worker_job_slots") == base["wealthai_worker_job_slots"] + 24
    assert value("wealthai_worker_accepting_jobs") == 1
    busy.state = Load(16, 0, False)
    assert value("wealthai_worker_jobs_in_flight") == base["wealthai_worker_jobs_in_flight"] + 2
    # Neither takes jobs now: the process does only if a runner of its own still does.
    assert value("wealthai_worker_accepting_jobs") == base["wealthai_worker_accepting_jobs"]
    del busy, draining
    gc.collect()
    assert value("wealthai_worker_jobs_in_flight") == base["wealthai_worker_jobs_in_flight"]
