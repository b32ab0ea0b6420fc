"""Dispatch of one section's job over a pool of scripted workers: what counts as a dispatch,
when it waits instead of asking again, when it gives up, where a job goes first and after a
loss, and where a job sent again resumes."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from orchestrator.dispatch import dispatch
from orchestrator.worker_client import Outcome, Progress, WorkerFull
from orchestrator.workers import WorkerPool
from tests.orchestrator.fakes import (
    FULL,
    LOST,
    OK,
    FakeWorker,
    Step,
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


class Seen:
    """An ``on_progress`` that records what it is given."""

    def __init__(self) -> None:
        self.reports: list[tuple[Progress, str]] = []

    async def __call__(self, progress: Progress, worker: str) -> None:
        self.reports.append((progress, worker))

    @property
    def progress(self) -> list[Progress]:
        return [progress for progress, _ in self.reports]


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
        dispatch(pool, job(), max_dispatches=4, on_dispatch=dispatched, prefer=first.address), 1
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
    seen = Seen()
    dispatched = Counter()

    outcome = await dispatch(
        pool, job(), max_dispatches=2, on_dispatch=dispatched, on_progress=seen
    )

    assert outcome == OK
    assert seen.reports == [
        (Progress(conv_id="c1"), worker.address),
        (Progress(conv_id="c1", message_id="m1"), worker.address),
    ]
    assert dispatched.count == 1


async def test_loss_after_progress_counts_the_dispatch_once() -> None:
    first = FakeWorker("127.0.0.1:7001", script=[[Progress(conv_id="c1"), LOST]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)
    dispatched = Counter()
    seen = Seen()

    outcome = await dispatch(
        pool,
        job(),
        max_dispatches=4,
        on_dispatch=dispatched,
        on_progress=seen,
        prefer=first.address,
    )

    assert outcome == OK
    assert dispatched.count == 2
    assert seen.progress == [Progress(conv_id="c1")]


async def test_job_ended_without_an_outcome_counts_as_lost() -> None:
    first = FakeWorker("127.0.0.1:7001", script=[[Progress(conv_id="c1")]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)

    outcome = await dispatch(pool, job(), max_dispatches=1, prefer=first.address)

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
    # The bigger worker is preferred, and loses the job.
    big = FakeWorker("127.0.0.1:7001", script=[[LOST], [OK]], reply=room(3))
    small = FakeWorker("127.0.0.1:7002", script=[[OK]], reply=room(1))
    pool = await pool_of(big, small)

    outcome = await dispatch(pool, job(), max_dispatches=4, prefer=big.address)

    assert outcome == OK
    assert len(big.runs) == 1
    assert len(small.runs) == 1


async def test_lost_worker_is_not_picked_until_a_probe_says_it_is_ready() -> None:
    big = FakeWorker("127.0.0.1:7001", script=[[LOST], [OK]], reply=room(3))
    small = FakeWorker("127.0.0.1:7002", script=[[OK]], reply=room(1))
    pool = await pool_of(big, small)
    await dispatch(pool, job("first"), max_dispatches=4, prefer=big.address)
    assert pool.stats().ready == 1

    # The next job goes to the small worker although the big one is preferred, with more room.
    await dispatch(pool, job("second"), max_dispatches=4, prefer=big.address)
    assert [j.section for j in small.runs] == ["first", "second"]
    assert [j.section for j in big.runs] == ["first"]

    await pool.refresh()
    assert pool.stats().ready == 2
    await dispatch(pool, job("third"), max_dispatches=4, prefer=big.address)
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


# -- a job sent again resumes where the lost one got ----------------------------------------

SENT = Progress(conv_id="c1", message_id="m1", asset_id="a1")


async def _lost_then_ok(*steps: Step) -> tuple[FakeWorker, FakeWorker, Outcome]:
    first = FakeWorker("127.0.0.1:7001", script=[[*steps, LOST]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)
    outcome = await dispatch(pool, job(), max_dispatches=4, prefer=first.address)
    return first, second, outcome


async def test_a_job_lost_after_its_prompt_was_sent_resumes_that_message_elsewhere() -> None:
    first, second, outcome = await _lost_then_ok(Progress(conv_id="c1", asset_id="a1"), SENT)

    assert outcome == OK
    assert first.runs == [job()]
    assert second.runs == [
        replace(job(), resume_conv_id="c1", resume_message_id="m1", resume_asset_id="a1")
    ]


async def test_a_job_lost_with_a_conversation_only_sends_its_prompt_there() -> None:
    _, second, _ = await _lost_then_ok(Progress(conv_id="c1", asset_id="a1"))

    assert second.runs == [replace(job(), resume_conv_id="c1", resume_asset_id="a1")]


async def test_a_job_lost_before_any_progress_is_sent_again_as_it_was() -> None:
    resuming = replace(job(), resume_conv_id="c0", resume_message_id="m0", resume_asset_id="a0")
    first = FakeWorker("127.0.0.1:7001", script=[[Progress(), LOST]], reply=room(3))
    second = FakeWorker("127.0.0.1:7002", script=[[OK]])
    pool = await pool_of(first, second)

    await dispatch(pool, resuming, max_dispatches=4, prefer=first.address)
    fresh = await dispatch(pool, job("other"), max_dispatches=4, prefer=first.address)

    assert second.runs[0] == resuming  # what the caller asked to resume, kept
    assert fresh == OK and second.runs[1] == job("other")


async def test_the_next_event_waits_until_on_progress_is_done() -> None:
    worker = FakeWorker("127.0.0.1:7001", script=[[SENT, OK]])
    pool = await pool_of(worker)
    stored = asyncio.Event()
    seen = Seen()

    async def store(progress: Progress, address: str) -> None:
        await stored.wait()
        await seen(progress, address)

    running = asyncio.create_task(dispatch(pool, job(), max_dispatches=1, on_progress=store))

    assert await still_pending(running, 0.2)
    stored.set()
    assert await asyncio.wait_for(running, 1) == OK
    assert seen.reports == [(SENT, worker.address)]


# -- a job started where a takeover would not look stores its worker first ------------------


class Placed:
    """An ``on_placed`` that records, with each address, the jobs its worker had run by then."""

    def __init__(self, workers: list[FakeWorker]) -> None:
        self.workers = {w.address: w for w in workers}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, address: str) -> None:
        self.calls.append((address, len(self.workers[address].runs)))


async def _two(home_script: list[Step] | None = None) -> tuple[WorkerPool, FakeWorker, FakeWorker]:
    """A pool of two workers, the home of ``job()`` first (running ``home_script``)."""
    a, b = FakeWorker("127.0.0.1:7001"), FakeWorker("127.0.0.1:7002")
    pool = await pool_of(a, b)
    home, other = (a, b) if pool.home(job().job_id) is pool.workers[a.address] else (b, a)
    home.script = [home_script or [OK]]
    return pool, home, other


async def test_a_job_at_its_home_or_where_preferred_stores_nothing() -> None:
    pool, home, other = await _two()
    placed = Placed([home, other])

    await dispatch(pool, job(), max_dispatches=1, on_placed=placed)
    await dispatch(pool, job(), max_dispatches=1, on_placed=placed, prefer=other.address)

    assert [len(home.runs), len(other.runs)] == [1, 1]
    assert placed.calls == []


async def test_a_job_whose_home_is_full_stores_the_other_worker_before_it_starts() -> None:
    pool, home, other = await _two()
    pool.workers[home.address].in_flight = 1  # its one slot taken
    placed = Placed([home, other])

    await dispatch(pool, job(), max_dispatches=1, on_placed=placed)

    assert placed.calls == [(other.address, 0)]
    assert len(other.runs) == 1


async def test_a_job_sent_again_elsewhere_stores_that_worker_unless_it_resumes_a_message() -> None:
    pool, home, other = await _two([Progress(conv_id="c1"), LOST])
    placed = Placed([home, other])
    await dispatch(pool, job(), max_dispatches=2, on_placed=placed)
    assert placed.calls == [(other.address, 0)]  # a conversation alone: nothing to resume

    pool, home, other = await _two([SENT, LOST])
    placed = Placed([home, other])
    await dispatch(pool, job(), max_dispatches=2, on_placed=placed)
    assert placed.calls == []  # it resumes the message the caller has
    assert other.runs[0].resume_message_id == "m1"
