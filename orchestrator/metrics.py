"""The orchestrator's metrics, read from the replica's memory when Prometheus scrapes.

Nothing here runs while a task runs: the replica already keeps what the metrics say (its runs,
its counters, the worker pool's slots), and :class:`_Collector` turns that into metric families
at each scrape, so the figures are exact and cost the hot path nothing.

Tasks by state is a gauge of the unfinished tasks this replica runs (``pending`` …
``processing``), not a counter of transitions: a gauge answers "how many tasks are in each
state now", sums across replicas to the platform's, and needs no code in the transitions.
Finished tasks are a counter by final state (``completed``, ``error``, ``cancelled``), whose
rate is the throughput; neither reads S3, so tasks stored but run by no replica (finished long
ago, or waiting for a takeover) are in neither.

Several orchestrators in one process (tests) are summed.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.models import TaskState

if TYPE_CHECKING:
    from orchestrator.service import Orchestrator

_watched: weakref.WeakSet[Orchestrator] = weakref.WeakSet()
RUNNING_STATES = [state for state in TaskState if not state.terminal]
FINAL_STATES = [state for state in TaskState if state.terminal]


def watch(orchestrator: Orchestrator) -> None:
    """Reports ``orchestrator``'s figures from now on (until it is garbage)."""
    _watched.add(orchestrator)


class _Collector(Collector):
    def collect(self) -> Iterator[Metric]:
        replicas = list(_watched)
        states: Counter[str] = Counter(
            run.record.status.value for o in replicas for run in list(o.runs.values())
        )
        tasks = GaugeMetricFamily(
            "wealthai_orchestrator_tasks",
            "Unfinished tasks this replica runs, by state.",
            labels=["state"],
        )
        for state in RUNNING_STATES:
            tasks.add_metric([state.value], states[state.value])
        yield tasks
        finished = CounterMetricFamily(
            "wealthai_orchestrator_tasks_finished",
            "Tasks this replica ran to an end, by final state.",
            labels=["state"],
        )
        for state in FINAL_STATES:
            finished.add_metric([state.value], sum(o.finished[state.value] for o in replicas))
        yield finished
        yield _counter(
            "wealthai_orchestrator_tasks_submitted",
            "Tasks submitted through this replica (stored and started; idempotent replays "
            "excluded).",
            sum(o.submitted for o in replicas),
        )
        yield _counter(
            "wealthai_orchestrator_takeovers",
            "Tasks this replica took over from a dead replica.",
            sum(o.takeover.taken_over for o in replicas),
        )
        pools = [o.deps.pool for o in replicas]
        stats = [pool.stats() for pool in pools]
        yield _gauge(
            "wealthai_orchestrator_sections_in_flight",
            "Section jobs of this replica holding a worker slot now.",
            sum(s.running for s in stats),
        )
        yield _gauge(
            "wealthai_orchestrator_sections_queued",
            "Section jobs of this replica waiting for a free worker slot.",
            sum(s.queued for s in stats),
        )
        yield _gauge(
            "wealthai_orchestrator_workers_ready",
            "Section workers this replica can hand jobs to.",
            sum(s.ready for s in stats),
        )
        yield _gauge(
            "wealthai_orchestrator_worker_slots",
            "Job slots of the ready workers (their capacity), as this replica sees them.",
            sum(s.capacity for s in stats),
        )
        yield _counter(
            "wealthai_orchestrator_worker_full_refusals",
            "Jobs a worker refused as full (its slots taken by other replicas' jobs).",
            sum(pool.refused_full for pool in pools),
        )
        yield _gauge(
            "wealthai_orchestrator_replicas_alive",
            "Orchestrator replicas this one sees alive by their leases, itself included.",
            max((len(o.membership.alive) for o in replicas), default=0),
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


REGISTRY.register(_Collector())
