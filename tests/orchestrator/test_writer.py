"""Group commit in a running task's writes: changes that arrive while a write is in flight share
the next write, and each caller returns only once its own change is stored.

Storage here is an in-memory stand-in whose writes the test holds open, so the moment a change
arrives relative to a write in flight is exact; the end-to-end tests and the benchmark count
the same writes at the S3 endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from orchestrator.models import SectionResult, TaskRecord
from orchestrator.storage_client import StorageClient
from orchestrator.writer import RecordWriter, TaskStopped
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeStorage


class HeldStorage:
    """Stores copies of what is written; each write waits until the test lets it finish."""

    def __init__(self) -> None:
        self.writes: list[TaskRecord] = []
        self.release = asyncio.Queue[BaseException | None]()
        self.started = asyncio.Event()

    async def update(self, record: TaskRecord, version: str) -> str:
        self.started.set()
        outcome = await self.release.get()
        if outcome is not None:
            raise outcome
        self.writes.append(record.model_copy(deep=True))
        return f"v{len(self.writes)}"


def _sections(names: str) -> dict[str, SectionResult]:
    return {n: SectionResult(record_index=i, asset_id="a") for i, n in enumerate(names)}


def _run() -> tuple[RecordWriter, HeldStorage]:
    storage = HeldStorage()
    record = task_record(data=[{}, {}, {}], result_data=_sections("xyz"))
    return RecordWriter(cast(StorageClient, storage), record, "v0", "r1"), storage


def _respond(name: str) -> Any:
    def change(record: TaskRecord) -> None:
        record.result_data[name].response = f"answer {name}"

    return change


async def test_changes_arriving_during_a_write_share_the_next_one() -> None:
    run, storage = _run()
    first = asyncio.create_task(run.persist(_respond("x")))
    await storage.started.wait()
    others = [asyncio.create_task(run.persist(_respond(n))) for n in "yz"]
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in [first, *others])

    storage.release.put_nowait(None)  # the first write: x only
    await first
    assert [w.result_data["x"].response for w in storage.writes] == ["answer x"]
    assert not any(t.done() for t in others)  # y and z are not stored yet

    storage.release.put_nowait(None)  # one write carries y and z
    await asyncio.gather(*others)
    assert len(storage.writes) == 2
    assert {n: s.response for n, s in storage.writes[1].result_data.items()} == {
        "x": "answer x",
        "y": "answer y",
        "z": "answer z",
    }
    assert run.record.result_data["z"].response == "answer z"
    assert run.version == "v2"


async def test_a_failed_write_fails_every_change_in_it() -> None:
    run, storage = _run()
    first = asyncio.create_task(run.persist(_respond("x")))
    await storage.started.wait()
    others = [asyncio.create_task(run.persist(_respond(n))) for n in "yz"]
    storage.release.put_nowait(None)
    await first
    storage.release.put_nowait(RuntimeError("disk on fire"))

    outcomes = await asyncio.gather(*others, return_exceptions=True)

    assert [str(o) for o in outcomes] == ["disk on fire", "disk on fire"]
    assert run.record.result_data["y"].response == ""


async def test_a_change_whose_caller_is_cancelled_while_waiting_is_not_written() -> None:
    run, storage = _run()
    first = asyncio.create_task(run.persist(_respond("x")))
    await storage.started.wait()
    dropped = asyncio.create_task(run.persist(_respond("y")))
    kept = asyncio.create_task(run.persist(_respond("z")))
    await asyncio.sleep(0.01)
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped

    storage.release.put_nowait(None)
    storage.release.put_nowait(None)
    await asyncio.gather(first, kept)

    assert storage.writes[-1].result_data["y"].response == ""
    assert storage.writes[-1].result_data["z"].response == "answer z"


async def test_when_the_writing_caller_is_cancelled_the_others_are_still_written() -> None:
    run, storage = _run()
    first = asyncio.create_task(run.persist(_respond("x")))
    await storage.started.wait()
    writer = asyncio.create_task(run.persist(_respond("y")))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(run.persist(_respond("z")))
    await asyncio.sleep(0.01)
    storage.started.clear()
    storage.release.put_nowait(None)
    await first
    await storage.started.wait()  # y's caller now writes y and z together...
    writer.cancel()  # ...and is cut off
    with pytest.raises(asyncio.CancelledError):
        await writer

    storage.release.put_nowait(None)
    await waiting

    assert len(storage.writes) == 2
    assert storage.writes[-1].result_data["z"].response == "answer z"
    assert storage.writes[-1].result_data["y"].response == ""


async def test_once_another_replica_took_the_task_no_later_change_is_written() -> None:
    storage = FakeStorage()
    record = task_record(owner="r1", data=[{}, {}], result_data=_sections("xy"))
    version = storage.put_record(record)
    run = RecordWriter(storage.as_client(), record.model_copy(deep=True), version, "r1")
    taken = record.model_copy(deep=True)
    taken.owner = "r2"  # another replica took the task over meanwhile
    storage.put_record(taken)

    with pytest.raises(TaskStopped):
        await run.persist(_respond("x"))
    writes = list(storage.history)
    # Its version is the one the writer read back: a write with it would go through.
    with pytest.raises(TaskStopped):
        await run.persist(_respond("y"))

    assert storage.history == writes
    assert storage.record(record.task_id).owner == "r2"
    assert storage.record(record.task_id).result_data["y"].response == ""
