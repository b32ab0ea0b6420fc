"""The writes a section's job goes on without waiting for (``pipeline._StoresBehind``): every
branch of how their failure ends the job, and how the section waits for them."""

from __future__ import annotations

import asyncio
import gc

import pytest

from orchestrator.pipeline import _StoresBehind
from orchestrator.worker_client import Outcome
from orchestrator.writer import TaskStopped

DONE = Outcome(success=True, response="r", cost=0.0, conv_id="c", message_id="m")


async def _stored(log: list[str], name: str, gate: asyncio.Event | None = None) -> None:
    if gate is not None:
        await gate.wait()
    log.append(name)


async def _refused(gate: asyncio.Event | None = None) -> None:
    if gate is not None:
        await gate.wait()
    raise TaskStopped("completed", "r2")


async def test_writes_start_at_once_in_order_and_the_job_goes_on() -> None:
    stores, log = _StoresBehind(), list[str]()
    stores.start(_stored(log, "m1"))
    stores.start(_stored(log, "m2"))

    async def job() -> Outcome:
        await asyncio.sleep(0)
        return DONE

    assert await stores.watch(job()) is DONE
    await stores.wait()
    assert log == ["m1", "m2"]


async def test_a_write_that_fails_during_the_job_cancels_it_with_the_write_error() -> None:
    stores, fail = _StoresBehind(), asyncio.Event()
    cancelled = asyncio.Event()

    async def job() -> Outcome:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return DONE

    stores.start(_refused(fail))
    watching = asyncio.ensure_future(stores.watch(job()))
    await asyncio.sleep(0.01)
    fail.set()
    with pytest.raises(TaskStopped):
        await watching
    assert cancelled.is_set()
    stores.close()


async def test_a_write_that_failed_between_jobs_ends_the_next_one_before_it_starts() -> None:
    stores, started = _StoresBehind(), []
    stores.start(_refused())
    await asyncio.sleep(0.01)

    async def job() -> Outcome:
        started.append(True)
        return DONE

    with pytest.raises(TaskStopped):
        await stores.watch(job())
    assert started == []


async def test_the_section_being_cancelled_is_a_cancellation_not_the_write_error() -> None:
    stores, fail = _StoresBehind(), asyncio.Event()
    stores.start(_refused(fail))
    watching = asyncio.ensure_future(stores.watch(asyncio.Event().wait()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    watching.cancel()
    fail.set()
    with pytest.raises(asyncio.CancelledError):
        await watching
    stores.close()


async def test_wait_raises_the_first_failure_and_close_cancels_the_rest_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stores, log, later = _StoresBehind(), list[str](), asyncio.Event()
    stores.start(_refused())
    stores.start(_refused())
    stores.start(_stored(log, "m3", later))
    with pytest.raises(TaskStopped):
        await stores.wait()
    stores.close()
    await asyncio.sleep(0.01)
    later.set()
    await asyncio.sleep(0.01)
    del stores  # the failed writes go with it: an error nobody read would be logged now
    gc.collect()
    assert log == []  # cancelled, never stored
    assert "exception was never retrieved" not in caplog.text
