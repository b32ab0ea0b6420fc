"""RunSections, the orchestrator's stream of many jobs, over real gRPC: each job's updates carry
its ref and end as its own RunSection call would, a refusal is one job's failure and not the
stream's, a job is cancelled by its ref, and the stream's end cancels whatever still runs."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from section_worker import servicer
from tests.helpers import assert_eventually
from tests.section_worker.conftest import Sim, StartWorker, Worker
from tests.section_worker.test_servicer import _job, _load
from wealthai.worker.v1 import worker_pb2


class Stream:
    """A RunSections call: instructions written as the test says, updates gathered by ref."""

    def __init__(self, worker: Worker) -> None:
        self.call = worker.stub.RunSections()
        self.updates: dict[int, list[Any]] = defaultdict(list)
        self.ended: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for update in self.call:
            self.updates[update.ref].append(update)
            if update.HasField("failure") or update.event.HasField("result"):
                self.ended[update.ref].set()

    async def start(self, ref: int, job: Any) -> None:
        await self.call.write(worker_pb2.JobControl(ref=ref, start=job))

    async def cancel(self, ref: int) -> None:
        await self.call.write(worker_pb2.JobControl(ref=ref, cancel=True))

    async def last(self, ref: int) -> Any:
        await asyncio.wait_for(self.ended[ref].wait(), 10)
        return self.updates[ref][-1]


@pytest.fixture
async def stream(worker: Worker) -> AsyncIterator[Stream]:
    made = Stream(worker)
    yield made
    made.call.cancel()
    await asyncio.gather(made.reader, return_exceptions=True)


async def test_jobs_of_one_stream_run_side_by_side_each_ending_with_its_result(
    sim: Sim, worker: Worker, stream: Stream, token: str
) -> None:
    records = {ref: f'{{"total_portfolio_mv": {ref}}}' for ref in (1, 2, 3)}
    for ref, record in records.items():
        await stream.start(ref, _job(token, job_id=f"task_9:s{ref}", record_json=record))

    results = {ref: (await stream.last(ref)).event.result for ref in records}

    assert all(result.success for result in results.values())
    assert len({result.response for result in results.values()}) == 3
    for ref in records:  # progress first, the result last, nothing after it
        first, *_, last = stream.updates[ref]
        assert first.event.progress.stage == worker_pb2.STAGE_ACCEPTED
        assert last.event.HasField("result")
    assert (await sim.stats())["calls"]["prompt"] == 3


async def test_a_refused_job_fails_alone_and_a_cancelled_one_frees_its_slot(
    sim: Sim, start_worker: StartWorker, token: str
) -> None:
    worker = await start_worker(max_concurrent_jobs=1)
    stream = Stream(worker)
    await sim.configure(latency_median_s=10)
    await stream.start(1, _job(token))
    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 1, what="first job running"
    )

    await stream.start(2, _job(token, job_id="task_9:other"))
    refused = await stream.last(2)
    assert refused.failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "maximum of 1 jobs" in refused.failure.details
    assert not stream.ended[1].is_set()

    await stream.cancel(1)
    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 0, what="slot freed"
    )
    assert not stream.ended[1].is_set()  # a cancelled job says nothing more

    await sim.configure(latency_median_s=0.01)
    await stream.start(3, _job(token, job_id="task_9:next"))
    assert (await stream.last(3)).event.result.success
    stream.call.cancel()
    await asyncio.gather(stream.reader, return_exceptions=True)


async def test_an_invalid_job_is_refused_as_invalid_input(stream: Stream, token: str) -> None:
    await stream.start(1, _job(token, access_token=""))

    refused = await stream.last(1)

    assert refused.failure.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refused.failure.details == "access_token is required"


async def test_a_ref_taken_by_a_running_job_ends_the_stream_and_its_jobs(
    sim: Sim, worker: Worker, stream: Stream, token: str
) -> None:
    await sim.configure(latency_median_s=10)
    await stream.start(1, _job(token))
    await stream.start(1, _job(token, job_id="task_9:other"))

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(stream.reader, 10)

    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ended.value.details() == "ref 1 is taken by a running job"
    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 0, what="job cancelled"
    )


async def test_a_draining_worker_refuses_each_job_as_unavailable(
    worker: Worker, stream: Stream, token: str
) -> None:
    assert await worker.runner.drain(0.1)

    await stream.start(1, _job(token))

    assert (await stream.last(1)).failure.code == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_the_end_of_the_stream_cancels_every_job_still_running(
    sim: Sim, worker: Worker, stream: Stream, token: str
) -> None:
    await sim.configure(latency_median_s=10)
    for ref in (1, 2):
        await stream.start(ref, _job(token, job_id=f"task_9:s{ref}"))
    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 2, what="both jobs running"
    )

    stream.call.cancel()

    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 0, what="jobs cancelled"
    )


async def test_a_caller_done_writing_gets_the_running_jobs_results_then_the_end(
    sim: Sim, stream: Stream, token: str
) -> None:
    await sim.configure(latency_median_s=0.3, latency_sigma=0.01)
    await stream.start(1, _job(token))
    await stream.call.done_writing()

    await asyncio.wait_for(stream.reader, 10)  # the stream ended, after the job's result

    assert stream.updates[1][-1].event.result.success
    assert await stream.call.code() == grpc.StatusCode.OK


async def test_an_answer_too_large_for_a_message_fails_its_job_not_the_stream(
    sim: Sim, stream: Stream, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "MAX_UPDATE_BYTES", 200)  # progress fits, the answer not

    await stream.start(1, _job(token))
    refused = await stream.last(1)
    await stream.start(2, _job(token, job_id="task_9:other", record_json="{}"))
    second = await stream.last(2)

    assert refused.failure.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert "over the 200 a message may carry" in refused.failure.details
    assert stream.updates[1][0].event.progress.stage == worker_pb2.STAGE_ACCEPTED
    assert second.failure.code == grpc.StatusCode.OUT_OF_RANGE.value[0]  # the stream lives on
