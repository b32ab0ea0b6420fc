"""Dispatch: runs one section's job on the pool's workers until it has an outcome.

A job goes to a free worker. If that worker is lost mid-job it is set aside and the job is sent
again, to another worker when there is one, at most ``max_dispatches`` times. A worker that
answers "full" (its slots were taken by other replicas' jobs) is set aside until its next load
probe: the job did not start there, so that refusal does not count as a dispatch, and the next
slot is waited for on the pool's condition rather than asked for again at once. A job the worker
refuses outright ends as a failed outcome with the worker's reason. A job whose access token the
platform rejected raises :class:`~orchestrator.worker_client.TokenExpired` to the caller, which
alone can renew the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.worker_client import (
    JobRejected,
    Outcome,
    Progress,
    SectionJob,
    WorkerFull,
    WorkerLost,
)
from orchestrator.workers import Worker, WorkerPool

logger = logging.getLogger(__name__)


async def dispatch(
    pool: WorkerPool,
    job: SectionJob,
    *,
    max_dispatches: int,
    on_dispatch: Callable[[], None] = lambda: None,
    on_progress: Callable[[Progress], None] = lambda _: None,
) -> Outcome:
    """The outcome of ``job``: the worker's, or a failure once ``max_dispatches`` workers were
    lost under it. ``on_dispatch`` is called each time the job is sent to a worker that takes
    it, ``on_progress`` with each progress report."""
    last_error = ""
    previous: Worker | None = None
    dispatches = 0
    while dispatches < max_dispatches:
        async with pool.slot(avoid=previous) as worker:
            previous = worker
            try:
                started = False
                async for event in worker.client.run(job):
                    if not started:
                        started = True
                        dispatches += 1
                        on_dispatch()
                    if isinstance(event, Outcome):
                        return event
                    on_progress(event)
                raise WorkerLost(worker.address, "ended the job without a result")
            except WorkerFull:
                if started:  # a worker only refuses before it starts a job
                    raise
                logger.info("section %s: worker %s is full; waiting", job.section, worker.address)
                pool.set_aside(worker, full=True)
                continue
            except WorkerLost as lost:
                if not started:
                    dispatches += 1
                    on_dispatch()
                pool.set_aside(worker, full=False)
                last_error = str(lost)
            except JobRejected as rejected:
                return Outcome.failed(rejected.reason)
        logger.warning("section %s: %s; dispatching again", job.section, last_error)
    return Outcome.failed(f"gave up after {dispatches} dispatches: {last_error}")
