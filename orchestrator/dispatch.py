"""Dispatch: runs one section's job on the pool's workers until it has an outcome.

A job goes to a free worker: the one the caller prefers, else the job's home in the pool, else
the least loaded (:meth:`WorkerPool.slot`). If that worker is lost mid-job it is set aside and
the job is sent again, to another worker when there is one, at most ``max_dispatches`` times.
A job sent again resumes where the lost one had got, as its progress reported it: polling the
message the platform accepted rather than sending the prompt twice (or, with only a
conversation, sending the prompt there). A worker that answers "full" (its slots were taken by
other replicas' jobs) is set aside until its next load probe: the job did not start there, so
that refusal does not count as a dispatch, and the next slot is waited for on the pool's
condition rather than asked for again at once. A job the worker refuses outright ends as a
failed outcome with the worker's reason. A job whose access token the platform rejected raises
:class:`~orchestrator.worker_client.TokenExpired` to the caller, which alone can renew the
token.

``on_progress`` is awaited before the job's next event is read, so what a caller does with the
ids a progress report carries (the pipeline queues their write) is done before anything else
happens to the section.
``on_placed`` is awaited before a job with no message to resume starts on a worker other than
the one a takeover would pick for it (``prefer``, else the job's home): stored, it lets a
replica taking the task over reach the worker that may hold the job's message as an orphan,
should this replica die before the message id is stored. With every home free, nothing is
written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

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

OnProgress = Callable[[Progress, str], Awaitable[None]]


async def _ignore(_progress: Progress, _worker: str) -> None:
    return None


async def _unplaced(_worker: str) -> None:
    return None


def resumed(job: SectionJob, conv_id: str, message_id: str, asset_id: str) -> SectionJob:
    """``job`` sent again from where an earlier dispatch got: ``conv_id`` (on ``asset_id``)
    and, when the platform had accepted the prompt, ``message_id``. Nothing reached, the job
    as it is."""
    if not conv_id:
        return job
    return dataclasses.replace(
        job, resume_conv_id=conv_id, resume_message_id=message_id, resume_asset_id=asset_id
    )


async def dispatch(
    pool: WorkerPool,
    job: SectionJob,
    *,
    max_dispatches: int,
    on_dispatch: Callable[[], None] = lambda: None,
    on_progress: OnProgress = _ignore,
    on_placed: Callable[[str], Awaitable[None]] = _unplaced,
    prefer: str = "",
) -> Outcome:
    """The outcome of ``job``: the worker's, or a failure once ``max_dispatches`` workers were
    lost under it. ``on_dispatch`` is called each time the job is sent to a worker that takes
    it; ``on_progress`` is awaited with each progress report and the address of the worker
    that made it. ``prefer`` is the address of the worker to try first (the one that last ran
    the job); ``on_placed`` is awaited with a worker's address before the job starts there when
    a takeover would not look for it there (see the module's docstring)."""
    home = pool.home(job.job_id)
    expected = prefer or (home.address if home else "")
    last_error = ""
    previous: Worker | None = None
    dispatches = 0
    while dispatches < max_dispatches:
        async with pool.slot(avoid=previous, key=job.job_id, prefer=prefer) as worker:
            previous = worker
            started = False
            if not job.resume_message_id and worker.address != expected:
                await on_placed(worker.address)
                expected = worker.address
            try:
                async with contextlib.aclosing(worker.client.run(job)) as events:
                    async for event in events:
                        if not started:
                            started = True
                            dispatches += 1
                            on_dispatch()
                        if isinstance(event, Outcome):
                            return event
                        await on_progress(event, worker.address)
                        job = resumed(job, event.conv_id, event.message_id, event.asset_id)
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
        if job.resume_message_id:
            logger.warning(
                "section %s: %s; dispatching again to resume message %s",
                job.section,
                last_error,
                job.resume_message_id,
            )
        else:
            logger.warning("section %s: %s; dispatching again", job.section, last_error)
    return Outcome.failed(f"gave up after {dispatches} dispatches: {last_error}")
