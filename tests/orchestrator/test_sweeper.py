"""The sweeper of sealed passwords: an error task is entered in the seal index when it ends;
the sweeper walks the index in deadline order, clears each due task's password after its retry
window and not before, stops at the first entry not yet due, and never reads other tasks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from common.errors import Conflict, Unavailable
from common.timeutil import parse_iso
from orchestrator.models import TaskState
from orchestrator.storage_client import SEALS
from orchestrator.sweeper import entry_name, index_seal, sweep_forever, sweep_once
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeStorage, eventually

ENDED = "2026-11-28T10:00:00.000000"
WINDOW_S = 3600.0


async def _ended(
    storage: FakeStorage, n: int, status: TaskState = TaskState.ERROR, ended: str = ENDED
) -> str:
    record = task_record(
        task_id=f"task_20261128000000_00000{n:03d}",
        status=status,
        password_sealed="sealed",
        completed_at=ended,
    )
    storage.put_record(record)
    await index_seal(storage.as_client(), record, WINDOW_S)
    return record.task_id


def _entries(storage: FakeStorage) -> list[str]:
    return sorted(name for ns, name in storage.objects if ns == SEALS)


async def test_only_an_error_task_keeping_its_seal_is_indexed() -> None:
    storage = FakeStorage()
    error = await _ended(storage, 1)
    await _ended(storage, 2, TaskState.COMPLETED)
    cleared = task_record(task_id="task_20261128000000_00000003", status=TaskState.ERROR)
    cleared.password_sealed, cleared.completed_at = "", ENDED
    await index_seal(storage.as_client(), cleared, WINDOW_S)
    assert _entries(storage) == [entry_name(storage.record(error), WINDOW_S)]
    assert _entries(storage)[0].endswith(error)


async def test_an_error_task_loses_its_seal_after_the_window_and_not_before() -> None:
    storage = FakeStorage()
    task_id = await _ended(storage, 1)
    ended = parse_iso(ENDED)

    before = await sweep_once(
        storage.as_client(), ended + timedelta(seconds=WINDOW_S), window_s=WINDOW_S
    )
    kept = storage.record(task_id).password_sealed
    after = await sweep_once(
        storage.as_client(), ended + timedelta(seconds=WINDOW_S + 2), window_s=WINDOW_S
    )

    assert (before, kept) == (0, "sealed")
    assert after == 1
    assert storage.record(task_id).password_sealed == ""
    assert storage.record(task_id).status == TaskState.ERROR
    assert _entries(storage) == []  # done: the entry is gone
    again = await sweep_once(storage.as_client(), ended + timedelta(days=2), window_s=WINDOW_S)
    assert again == 0
    assert storage.history.count(("update", task_id)) == 1


async def test_the_sweep_stops_at_the_first_entry_not_yet_due_and_reads_no_other_task() -> None:
    storage = FakeStorage()
    due = [await _ended(storage, n) for n in range(150)]  # more than one page of the index
    later = await _ended(storage, 500, ended="2026-11-29T10:00:00.000000")
    unindexed = task_record(task_id="task_20261128000000_00000999", status=TaskState.ERROR)
    storage.put_record(unindexed)  # e.g. ended before the index existed

    cleared = await sweep_once(
        storage.as_client(), parse_iso(ENDED) + timedelta(hours=2), window_s=WINDOW_S
    )

    assert cleared == len(due)
    assert all(storage.record(t).password_sealed == "" for t in due)
    assert storage.record(later).password_sealed == "sealed"
    assert ("get", later) not in storage.calls and ("get", unindexed.task_id) not in storage.calls
    assert _entries(storage) == [entry_name(storage.record(later), WINDOW_S)]


async def test_a_task_retried_since_is_left_and_its_stale_entry_dropped() -> None:
    storage = FakeStorage()
    task_id = await _ended(storage, 1)
    retried = storage.record(task_id)
    retried.status, retried.completed_at = TaskState.PROCESSING, None
    storage.put_record(retried)

    cleared = await sweep_once(storage.as_client(), parse_iso(ENDED) + timedelta(days=1))

    assert cleared == 0
    assert storage.record(task_id).password_sealed == "sealed"  # the retry still needs it
    assert _entries(storage) == []


async def test_a_conflicting_write_keeps_the_entry_for_the_next_round() -> None:
    storage = FakeStorage()
    first = await _ended(storage, 1)
    second = await _ended(storage, 2)
    storage.fail("update", Conflict("changed meanwhile"))
    later = parse_iso(ENDED) + timedelta(days=1)

    assert await sweep_once(storage.as_client(), later, window_s=WINDOW_S) == 1
    assert len(_entries(storage)) == 1
    assert await sweep_once(storage.as_client(), later, window_s=WINDOW_S) == 1
    assert storage.record(first).password_sealed == storage.record(second).password_sealed == ""
    assert _entries(storage) == []


async def test_the_loop_sweeps_when_allowed_and_survives_a_failed_sweep() -> None:
    storage = FakeStorage()
    task_id = await _ended(storage, 1)
    allowed = asyncio.Event()
    storage.fail("list_object_page", Unavailable("storage down"))
    loop = asyncio.create_task(
        sweep_forever(
            storage.as_client(),
            window_s=WINDOW_S,
            interval_s=0.01,
            should_run=allowed.is_set,
            clock=lambda: parse_iso(ENDED) + timedelta(days=1),
        )
    )
    try:
        await asyncio.sleep(0.05)
        assert storage.record(task_id).password_sealed == "sealed"  # not allowed yet
        allowed.set()
        await eventually(lambda: storage.record(task_id).password_sealed == "", what="swept")
    finally:
        loop.cancel()
