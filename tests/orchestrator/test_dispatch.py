"""Dispatch of one section's job over a pool of scripted workers: what counts as a dispatch,
when it waits instead of asking again, when it gives up, and where a job goes after a loss."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.dispatch import dispatch
from orchestrator.worker_client import Outcome, Progress, WorkerFull
from orchestrator.workers import WorkerPool
from tests.orchestrator.fakes import (
    FULL,
    LOST,
    OK,
    FakeWorker,
    eventually,
    job,
    pool_of,
    reject,
    room,
    still_pending,
)


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _start(pool: WorkerPool, max_dispatches: int = 4, **kwargs: object) -> asyncio.Task[Outcome]:
    return asyncio.create_task(dispatch(pool, job(), max_dispatches=max_dispatches, **kwargs))  # type: ignore[arg-type]


async def test_full_then_lost_then_ok_counts_two_dispatches() -> None:
    worker = FakeWorker("127.0.0.1:7001", script=[[FULL], [LOST], [OK]])
    pool = await pool_of(worker)
    dispatched = Counter()
    running = _start(pool, max_dispatches=3, on_dispatch=dispatched)

    # Full: the job did not start, the worker is set aside and the job waits for a probe.
    await eventually(lambda: len(worker.runs) == 1 and pool.stats().queued == 1)
    assert dispatched.count == 0
    await pool.refresh()

    # Lost: that was a dispatch; the worker is set aside again until the next probe.
    await eventually(lambda: len(worker.runs) == 2 and pool.stats().queued == 1)
    assert dispatched.count == 1
    await pool.refresh()

    outcome = await asyncio.wait_for(running, 1)
    assert outcome == OK
    assert dispatched.count == 2
    assert len(worker.runs) == 3
    assert pool.refused_full == 1


async def test_always_full_waits_for_a_probe_instead_of_spinning() -> None:
    worker = FakeWorker("127.0.0.1:7001", script=[[FULL]])
    pool = await pool_of(worker)
    dispatched = Counter()
    running = _start(pool, on_dispatch=dispatched)

    assert await still_pending(running, 0.3)
    assert len(worker.runs) == 1
    assert pool.stats().queued == 1

    # A probe that finds its slots still taken (by other replicas) keeps it out.
    worker.reply = room(capacity=1, in_flight=1)
    await pool.refresh()
    assert await still_pending(running, 0.1)
    assert len(worker.runs) == 1

    worker.reply = room(capacity=1, in_flight=0)
    worker.script = [[OK]]
    await pool.refresh()
    assert await asyncio.wait_for(running, 1) == OK
    assert len(worker.runs) == 2
    assert dispatched.count == 1
    assert pool.stats().queued == 0


async def test_gives_up_after_max_dispatches_losses() -> None:
    workers = [FakeWorker(f"127.0.0.1:700{i}", script=[[LOST]]) for i in range(1, 4)]
    pool = await pool_of(*workers)
    dispatched = Counter()

    outcome = await asyncio.wait_for(
        dispatch(pool, job(), max_dispatches=3, on_dispatch=dispatched), 1
    )

    assert not outcome.success
    assert outcome.error.startswith("gave up after 3 dispatches: ")
    assert "lost: UNAVAILABLE" in outcome.error
    assert dispatched.count == 3
    # Each lost worker was set aside, so each got the job once.
    assert [len(w.runs) for w in workers] == [1, 1, 1]
    assert pool.stats().ready == 0


async def test_rejected_job_fails_with_the_reason_and_is_not_sent_again() -> None:
    first = FakeWorker("127.0.0.1:7001", script=[[reject("bad asset")]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)
    dispatched = Counter()

    outcome = await asyncio.wait_for(
        dispatch(pool, job(), max_dispatches=4, on_dispatch=dispatched), 1
    )

    assert outcome == Outcome.failed("bad asset")
    assert len(first.runs) == 1
    assert second.runs == []
    assert dispatched.count == 0
    assert pool.stats().ready == 2  # a refusal of the job says nothing against the worker


async def test_progress_reaches_on_progress_in_order() -> None:
    steps = [Progress(conv_id="c1"), Progress(conv_id="c1", message_id="m1"), OK]
    worker = FakeWorker("127.0.0.1:7001", script=[steps])
    pool = await pool_of(worker)
    seen: list[Progress] = []
    dispatched = Counter()

    outcome = await dispatch(
        pool, job(), max_dispatches=2, on_dispatch=dispatched, on_progress=seen.append
    )

    assert outcome == OK
    assert seen == [Progress(conv_id="c1"), Progress(conv_id="c1", message_id="m1")]
    assert dispatched.count == 1


async def test_loss_after_progress_counts_the_dispatch_once() -> None:
    first = FakeWorker("127.0.0.1:7001", script=[[Progress(conv_id="c1"), LOST]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)
    dispatched = Counter()
    seen: list[Progress] = []

    outcome = await dispatch(
        pool, job(), max_dispatches=4, on_dispatch=dispatched, on_progress=seen.append
    )

    assert outcome == OK
    assert dispatched.count == 2
    assert seen == [Progress(conv_id="c1")]


async def test_job_ended_without_an_outcome_counts_as_lost() -> None:
    first = FakeWorker("127.0.0.1:7001", script=[[Progress(conv_id="c1")]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)

    outcome = await dispatch(pool, job(), max_dispatches=1)

    assert not outcome.success
    assert "ended the job without a result" in outcome.error
    assert second.runs == []
    assert pool.stats().ready == 1  # the first worker is set aside


async def test_full_after_the_job_started_is_raised() -> None:
    worker = FakeWorker("127.0.0.1:7001", script=[[Progress(conv_id="c1"), FULL]])
    pool = await pool_of(worker)

    with pytest.raises(WorkerFull):
        await dispatch(pool, job(), max_dispatches=4)
    assert pool.stats().running == 0  # the slot was given back


async def test_job_sent_again_after_a_loss_goes_to_another_worker() -> None:
    # The bigger worker is picked first, and loses the job.
    big = FakeWorker("127.0.0.1:7001", script=[[LOST], [OK]], reply=room(3))
    small = FakeWorker("127.0.0.1:7002", script=[[OK]], reply=room(1))
    pool = await pool_of(big, small)

    outcome = await dispatch(pool, job(), max_dispatches=4)

    assert outcome == OK
    assert len(big.runs) == 1
    assert len(small.runs) == 1


async def test_lost_worker_is_not_picked_until_a_probe_says_it_is_ready() -> None:
    big = FakeWorker("127.0.0.1:7001", script=[[LOST], [OK]], reply=room(3))
    small = FakeWorker("127.0.0.1:7002", script=[[OK]], reply=room(1))
    pool = await pool_of(big, small)
    await dispatch(pool, job("first"), max_dispatches=4)
    assert pool.stats().ready == 1

    # The next job goes to the small worker although the big one has more room.
    await dispatch(pool, job("second"), max_dispatches=4)
    assert [j.section for j in small.runs] == ["first", "second"]
    assert [j.section for j in big.runs] == ["first"]

    await pool.refresh()
    assert pool.stats().ready == 2
    await dispatch(pool, job("third"), max_dispatches=4)
    assert [j.section for j in big.runs] == ["first", "third"]


async def test_single_lost_worker_makes_the_job_wait_for_a_probe() -> None:
    worker = FakeWorker("127.0.0.1:7001", script=[[LOST], [OK]])
    pool = await pool_of(worker)
    running = _start(pool)

    assert await still_pending(running, 0.2)
    assert len(worker.runs) == 1
    assert pool.stats().queued == 1

    await pool.refresh()
    assert await asyncio.wait_for(running, 1) == OK
