"""The sweeper of sealed passwords: error tasks lose theirs after the retry window, not before;
other tasks are left alone; a task changed meanwhile is left to its writer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from common.errors import Conflict, Unavailable
from common.timeutil import parse_iso
from orchestrator.models import TaskState
from orchestrator.sweeper import sweep_forever, sweep_once
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeStorage, eventually

ENDED = "2026-11-28T10:00:00.000000"
WINDOW_S = 3600.0


def _store(storage: FakeStorage, n: int, status: TaskState, sealed: str = "sealed") -> str:
    task_id = f"task_20261128000000_00000{n:03d}"
    storage.put_record(
        task_record(task_id=task_id, status=status, password_sealed=sealed, completed_at=ENDED)
    )
    return task_id


async def test_an_error_task_loses_its_seal_after_the_window_and_not_before() -> None:
    storage = FakeStorage()
    task_id = _store(storage, 1, TaskState.ERROR)
    ended = parse_iso(ENDED)

    before = await sweep_once(
        storage.as_client(), ended + timedelta(seconds=WINDOW_S), window_s=WINDOW_S
    )
    kept = storage.record(task_id).password_sealed
    after = await sweep_once(
        storage.as_client(), ended + timedelta(seconds=WINDOW_S + 1), window_s=WINDOW_S
    )

    assert (before, kept) == (0, "sealed")
    assert after == 1
    assert storage.record(task_id).password_sealed == ""
    assert storage.record(task_id).status == TaskState.ERROR
    again = await sweep_once(storage.as_client(), ended + timedelta(days=2), window_s=WINDOW_S)
    assert again == 0
    assert storage.history.count(("update", task_id)) == 1


async def test_only_error_tasks_are_swept_across_pages() -> None:
    storage = FakeStorage()
    errors = [_store(storage, n, TaskState.ERROR) for n in range(150)]  # more than one page
    running = _store(storage, 900, TaskState.PROCESSING)

    cleared = await sweep_once(storage.as_client(), parse_iso(ENDED) + timedelta(days=2))

    assert cleared == len(errors)
    assert all(storage.record(t).password_sealed == "" for t in errors)
    assert storage.record(running).password_sealed == "sealed"


async def test_a_conflicting_write_is_tolerated_and_the_rest_are_swept() -> None:
    storage = FakeStorage()
    first, second = _store(storage, 1, TaskState.ERROR), _store(storage, 2, TaskState.ERROR)
    storage.fail("update", Conflict("changed since"))  # e.g. retried meanwhile

    cleared = await sweep_once(storage.as_client(), parse_iso(ENDED) + timedelta(days=2))

    assert cleared == 1
    sealed = {t: storage.record(t).password_sealed for t in (first, second)}
    assert sorted(sealed.values()) == ["", "sealed"]


async def test_the_loop_sweeps_when_allowed_and_survives_a_failed_sweep() -> None:
    storage = FakeStorage()
    task_id = _store(storage, 1, TaskState.ERROR)
    storage.fail("list_tasks", Unavailable("storage down"))
    allowed = asyncio.Event()
    loop = asyncio.create_task(
        sweep_forever(
            storage.as_client(),
            window_s=WINDOW_S,
            interval_s=0.01,
            should_run=allowed.is_set,
            clock=lambda: parse_iso(ENDED) + timedelta(days=2),
        )
    )
    try:
        await asyncio.sleep(0.05)
        assert ("list_tasks", "") not in storage.calls  # not this replica's turn
        allowed.set()
        await eventually(lambda: storage.record(task_id).password_sealed == "", what="swept")
    finally:
        loop.cancel()
    assert storage.calls.count(("list_tasks", "")) >= 2  # the failed sweep, then the next
