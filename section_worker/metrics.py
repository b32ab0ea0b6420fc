"""The section worker's metrics: jobs in flight and slots (read from the job runners when
Prometheus scrapes), and every finished job by outcome with its duration.

The platform calls themselves (by asset and outcome, fallbacks, breakers, spend) are the
protection layer's metrics. Several job runners in one process (tests) are summed.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from section_worker.jobs import JobRunner, SectionResult

JOBS_FINISHED = Counter(
    "wealthai_worker_jobs_finished_total",
    "Section jobs this worker ran to a result, by outcome: completed, failed, or "
    "token_expired (sent again by the orchestrator with a new token).",
    ["outcome"],
)
JOB_DURATION = Histogram(
    "wealthai_worker_job_duration_seconds",
    "Time from a job's start on this worker to its result, by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)

_watched: weakref.WeakSet[JobRunner] = weakref.WeakSet()


def watch(runner: JobRunner) -> None:
    """Reports ``runner``'s jobs in flight and slots from now on (until it is garbage)."""
    _watched.add(runner)


def outcome_of(result: SectionResult) -> str:
    if result.success:
        return "completed"
    return "token_expired" if result.token_expired else "failed"


def job_finished(result: SectionResult) -> None:
    """Counts and times one job that reached its result."""
    outcome = outcome_of(result)
    JOBS_FINISHED.labels(outcome).inc()
    JOB_DURATION.labels(outcome).observe(result.duration_s)


class _Collector(Collector):
    def collect(self) -> Iterator[Metric]:
        loads = [runner.load() for runner in list(_watched)]
        yield GaugeMetricFamily(
            "wealthai_worker_jobs_in_flight",
            "Section jobs this worker runs now.",
            value=sum(load.in_flight for load in loads),
        )
        yield GaugeMetricFamily(
            "wealthai_worker_job_slots",
            "Jobs this worker runs at once at most (WORKER_MAX_CONCURRENT_JOBS).",
            value=sum(load.capacity for load in loads),
        )
        yield GaugeMetricFamily(
            "wealthai_worker_accepting_jobs",
            "1 while this worker takes new jobs, 0 once it drains for shutdown.",
            value=int(any(load.accepting for load in loads)),
        )


REGISTRY.register(_Collector())
