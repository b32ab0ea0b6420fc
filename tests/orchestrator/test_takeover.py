"""Takeover of a dead replica's tasks over in-memory storage: which tasks are taken, which are
left, what happens on a lost compare-and-swap, dead-lettering, and two replicas racing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from common import task_ids
from common.errors import Conflict, Unavailable
from common.timeutil import iso
from orchestrator.membership import LeaseBody, Membership
from orchestrator.models import SectionResult, SectionState, TaskRecord, TaskState
from orchestrator.storage_client import LEASES, UnreadableTask
from orchestrator.takeover import Takeover
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeClock, FakeStorage, eventually

TTL = 10.0
RENEWED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


class Launches:
    def __init__(self) -> None:
        self.launched: list[tuple[str, str]] = []

    def __call__(self, record: TaskRecord, version: str) -> None:
        self.launched.append((record.task_id, version))

    @property
    def ids(self) -> list[str]:
        return [task_id for task_id, _ in self.launched]


class Replica:
    """One observer: its membership, its takeover and what it launched."""

    def __init__(
        self,
        storage: FakeStorage,
        name: str = "r1",
        max_takeovers: int = 3,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.launches = Launches()
        self.held = set(held)
        self.membership = Membership(
            storage.as_client(), name, f"addr-{name}", ttl_s=TTL, held=lambda: self.held
        )
        self.takeover = Takeover(
            storage.as_client(),
            self.membership,
            max_takeovers=max_takeovers,
            launch=self.launches,
            held=lambda: self.held,
        )


def _id(at: datetime, random: str, tag: str = "0a") -> str:
    return task_ids.new(at, tag, random)


def _task(
    storage: FakeStorage,
    at: datetime,
    random: str,
    owner: str = "r0",
    status: TaskState = TaskState.PROCESSING,
    **fields: object,
) -> str:
    sections = {
        "done": SectionResult(status=SectionState.COMPLETED, record_index=0, asset_id="a"),
        "open": SectionResult(status=SectionState.RUNNING, record_index=1, asset_id="b"),
    }
    record = task_record(
        task_id=_id(at, random),
        owner=owner,
        status=status,
        data=[{}, {}],
        result_data=sections,
        **fields,
    )
    storage.put_record(record)
    return record.task_id


def _dead_lease(storage: FakeStorage, tasks: list[str], renewed_at: str = iso(RENEWED)) -> None:
    body = LeaseBody(
        replica_id="r0", address="addr-r0", renewed_at=renewed_at, tasks=tasks, stopped=True
    )
    storage.objects[(LEASES, "r0")] = (body.model_dump_json().encode(), "lease-v1")


OLD = RENEWED - timedelta(hours=1)
NEW = RENEWED + timedelta(seconds=1)


async def test_dead_replicas_listed_and_newer_tasks_are_taken(clock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001")
    newer = _task(storage, NEW, "000002")
    finished = _task(storage, OLD, "000003", status=TaskState.COMPLETED)
    others = _task(storage, OLD, "000004", owner="r2")
    newer_others = _task(storage, NEW, "000005", owner="r2")
    newer_finished = _task(storage, NEW, "000006", status=TaskState.ERROR)
    unlisted_old = _task(storage, OLD, "000007")  # neither listed nor in the window
    _dead_lease(storage, [listed, finished, others])
    me = Replica(storage)

    assert await me.takeover.scan() == 2

    assert sorted(me.launches.ids) == sorted([listed, newer])
    for task_id in (listed, newer):
        record = storage.record(task_id)
        assert (record.owner, record.takeovers) == ("r1", 1)
        assert record.trace[-1].step == "Takeover"
        assert (task_id, storage.version(task_id)) in me.launches.launched
    for task_id in (finished, others, newer_others, newer_finished, unlisted_old):
        assert storage.record(task_id).owner != "r1"
    assert storage.record(finished).status == TaskState.COMPLETED
    assert me.takeover.taken_over == 2
    assert (LEASES, "r0") not in storage.objects
    assert "r0" not in me.membership.leases


async def test_taken_tasks_are_in_the_lease_before_they_are_written(clock, storage):
    listed = _task(storage, OLD, "000001")
    _dead_lease(storage, [listed])
    me = Replica(storage)

    await me.takeover.scan()

    lease_write = storage.history.index(("put_object", "r1"))
    task_write = storage.history.index(("update", listed))
    lease_delete = storage.history.index(("delete_object", "r0"))
    assert lease_write < task_write < lease_delete


async def test_window_spans_several_pages(clock, storage: FakeStorage):
    newer = [_task(storage, NEW, f"{n:06x}") for n in range(25)]
    _dead_lease(storage, [])
    me = Replica(storage)
    assert await me.takeover.scan() == 25
    assert sorted(me.launches.ids) == sorted(newer)


async def test_no_renewal_time_means_only_listed_tasks(clock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001")
    newer = _task(storage, NEW, "000002")
    _dead_lease(storage, [listed], renewed_at="")
    me = Replica(storage)
    assert await me.takeover.scan() == 1
    assert me.launches.ids == [listed]
    assert storage.record(newer).owner == "r0"


async def test_listed_task_held_here_or_missing_is_skipped(clock, storage: FakeStorage):
    held = _task(storage, OLD, "000001")
    missing = _id(OLD, "000002")
    listed = _task(storage, OLD, "000003")
    _dead_lease(storage, [held, missing, listed])
    me = Replica(storage, held={held})
    assert await me.takeover.scan() == 1
    assert me.launches.ids == [listed]
    assert ("get", held) not in storage.calls
    assert storage.record(held).owner == "r0"
    assert (LEASES, "r0") not in storage.objects


async def test_live_replica_is_left_alone(clock: FakeClock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001")
    body = LeaseBody(replica_id="r0", renewed_at=iso(RENEWED), tasks=[listed])
    storage.objects[(LEASES, "r0")] = (body.model_dump_json().encode(), "lease-v1")
    me = Replica(storage)
    assert await me.takeover.scan() == 0
    clock.advance(TTL + 1)  # its lease never changed: now it is dead
    assert await me.takeover.scan() == 1
    assert me.launches.ids == [listed]


async def test_conflict_means_none_taken_and_no_launch(clock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001")
    _dead_lease(storage, [listed])
    storage.fail("update", Conflict("changed"))
    me = Replica(storage)

    assert await me.takeover.scan() == 0

    assert me.launches.launched == []
    assert me.takeover.taken_over == 0
    assert storage.record(listed).owner == "r0"


async def test_take_over_with_a_stale_version_loses(clock, storage: FakeStorage):
    task_id = _task(storage, OLD, "000001")
    record, version = await storage.get(task_id)
    storage.put_record(storage.record(task_id))  # someone wrote it since
    me = Replica(storage)
    assert await me.takeover.take_over(record, version) == 0
    assert me.launches.launched == []
    assert storage.record(task_id).owner == "r0"


async def test_past_max_takeovers_the_task_is_dead_lettered(clock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001", takeovers=2)
    _dead_lease(storage, [listed])
    me = Replica(storage, max_takeovers=2)

    assert await me.takeover.scan() == 0

    assert me.launches.launched == []
    record = storage.record(listed)
    assert record.status == TaskState.ERROR
    assert record.takeovers == 3
    assert record.message.startswith("Dead-lettered: its owner died 3 times")
    assert record.result_data["done"].status == SectionState.COMPLETED
    assert record.result_data["open"].status == SectionState.ERROR
    assert (LEASES, "r0") not in storage.objects


async def test_dead_letter_losing_its_write_is_quiet(clock, storage: FakeStorage):
    task_id = _task(storage, OLD, "000001", takeovers=1)
    record, version = await storage.get(task_id)
    storage.put_record(storage.record(task_id))
    me = Replica(storage, max_takeovers=0)
    assert await me.takeover.take_over(record, version) == 0
    assert storage.record(task_id).status == TaskState.PROCESSING


async def test_two_replicas_racing_for_a_task_exactly_one_wins(clock, storage: FakeStorage):
    listed = _task(storage, OLD, "000001")
    newer = _task(storage, NEW, "000002")
    _dead_lease(storage, [listed])
    first, second = Replica(storage, "r1"), Replica(storage, "r2")

    taken = await asyncio.gather(first.takeover.scan(), second.takeover.scan())

    assert sum(taken) == 2
    launched = first.launches.ids + second.launches.ids
    assert sorted(launched) == sorted([listed, newer])
    for task_id in (listed, newer):
        winner = "r1" if task_id in first.launches.ids else "r2"
        assert storage.record(task_id).owner == winner
        assert storage.record(task_id).takeovers == 1


async def test_same_record_taken_twice_only_the_first_wins(clock, storage: FakeStorage):
    task_id = _task(storage, OLD, "000001")
    record, version = await storage.get(task_id)
    first, second = Replica(storage, "r1"), Replica(storage, "r2")
    assert await first.takeover.take_over(record.model_copy(deep=True), version) == 1
    assert await second.takeover.take_over(record.model_copy(deep=True), version) == 0
    assert storage.record(task_id).owner == "r1"
    assert second.launches.launched == []


async def test_failure_recovering_one_replica_does_not_stop_the_others(clock, storage):
    a = _task(storage, OLD, "000001")
    b = _task(storage, OLD, "000002")
    for name, task_id in (("ra", a), ("rb", b)):
        body = LeaseBody(replica_id=name, tasks=[task_id], stopped=True)
        storage.objects[(LEASES, name)] = (body.model_dump_json().encode(), f"{name}-v1")
    for task_id in (a, b):
        record = storage.record(task_id)
        record.owner = "ra" if task_id == a else "rb"
        storage.put_record(record)
    storage.fail("get", Unavailable("storage unavailable"))  # the first read: ra's task
    me = Replica(storage)

    assert await me.takeover.scan() == 1
    assert me.launches.ids == [b]
    assert (LEASES, "ra") in storage.objects  # kept for the next scan
    assert (LEASES, "rb") not in storage.objects

    assert await me.takeover.scan() == 1
    assert me.launches.ids == [b, a]


async def test_an_unreadable_listed_task_does_not_hold_the_others_back(clock, storage):
    """One document that no longer parses (stored before records were limited in depth) is
    logged and skipped; the dead replica's other tasks are still taken over."""
    broken = _task(storage, OLD, "000001")
    listed = _task(storage, OLD, "000002")
    _dead_lease(storage, [broken, listed])
    storage.fail("get", UnreadableTask(broken, "recursion limit exceeded"))
    me = Replica(storage)

    assert await me.takeover.scan() == 1

    assert me.launches.ids == [listed]
    assert (LEASES, "r0") not in storage.objects


async def test_a_takeover_whose_answer_is_lost_but_that_landed_runs_the_task(clock, storage):
    task_id = _task(storage, OLD, "000001")
    record, version = await storage.get(task_id)
    storage.lose_reply("update")  # stored, then storage_svc dies before it answers
    me = Replica(storage)

    assert await me.takeover.take_over(record, version) == 1

    assert me.launches.launched == [(task_id, storage.version(task_id))]
    assert (storage.record(task_id).owner, storage.record(task_id).takeovers) == ("r1", 1)
    assert storage.history.count(("update", task_id)) == 1


async def test_a_takeover_that_did_not_land_is_written_once_storage_answers(clock, storage):
    task_id = _task(storage, OLD, "000001")
    record, version = await storage.get(task_id)
    storage.fail("update", Unavailable("storage unavailable"), times=2)
    me = Replica(storage)

    assert await me.takeover.take_over(record, version) == 1

    assert me.launches.launched == [(task_id, storage.version(task_id))]
    assert storage.record(task_id).owner == "r1"


async def test_a_lost_answer_then_another_owner_means_not_taken(clock, storage: FakeStorage):
    task_id = _task(storage, OLD, "000001")
    record, version = await storage.get(task_id)
    storage.fail("update", Unavailable("storage unavailable"))
    me = Replica(storage)
    taking = asyncio.create_task(me.takeover.take_over(record, version))
    await eventually(lambda: ("update", task_id) in storage.calls, what="the write tried")
    other = storage.record(task_id)
    other.owner, other.takeovers = "r2", 1  # another replica won while storage was away
    storage.put_record(other)

    assert await taking == 0

    assert me.launches.launched == []
    assert storage.record(task_id).owner == "r2"
