"""Membership over in-memory storage with a clock the test moves: tags, lease contents, who is
judged alive or dead (on the observer's clock), and where a task-scoped call is served."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common import task_ids
from common.errors import Unavailable
from orchestrator.membership import LeaseBody, Membership, parse_lease
from orchestrator.storage_client import LEASES
from tests.orchestrator.fakes import FakeClock, FakeStorage

TTL = 10.0


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


class Held:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self) -> set[str]:
        return self.ids


def _member(storage: FakeStorage, replica: str = "r1", held: Held | None = None) -> Membership:
    return Membership(
        storage.as_client(), replica, f"addr-{replica}", ttl_s=TTL, held=held or Held()
    )


def _lease(storage: FakeStorage, name: str) -> LeaseBody:
    return LeaseBody.model_validate_json(storage.objects[(LEASES, name)][0])


def write_lease(storage: FakeStorage, replica: str, **fields: object) -> None:
    """Writes (or rewrites) another replica's lease, as that replica would."""
    body = LeaseBody(replica_id=replica, address=f"addr-{replica}", **fields)  # type: ignore[arg-type]
    old = storage.objects.get((LEASES, replica))
    storage.objects[(LEASES, replica)] = (
        body.model_dump_json().encode(),
        f"{replica}-v{int(old[1].rsplit('v', 1)[1]) + 1 if old else 1}",
    )


def _task_id(tag: str, random: str = "000001") -> str:
    return task_ids.new(datetime(2026, 1, 1, tzinfo=UTC), tag, random)


# -- own lease ------------------------------------------------------------------------------


async def test_join_keeps_a_free_tag_and_writes_the_lease(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    tag = member.tag
    await member.join()
    assert member.tag == tag
    lease = _lease(storage, "r1")
    assert (lease.replica_id, lease.address, lease.tag, lease.stopped) == (
        "r1",
        "addr-r1",
        tag,
        False,
    )


async def test_join_picks_a_free_tag_when_its_own_is_taken(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    taken = member.tag
    write_lease(storage, "r0", tag=taken)
    await member.join()
    assert member.tag != taken
    assert len(member.tag) == 2 and int(member.tag, 16) >= 0
    assert _lease(storage, "r1").tag == member.tag


async def test_join_keeps_its_tag_when_every_tag_is_taken(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    for n in range(256):
        write_lease(storage, f"x{n}", tag=f"{n:02x}")
    tag = member.tag
    await member.join()
    assert member.tag == tag


async def test_renew_lists_held_and_claimed_tasks(clock: FakeClock, storage: FakeStorage):
    held = Held()
    held.ids = {"task_a"}
    member = _member(storage, held=held)
    await member.join()
    assert _lease(storage, "r1").tasks == ["task_a"]

    async with member.claiming(["task_b"]):
        assert _lease(storage, "r1").tasks == ["task_a", "task_b"]
        async with member.claiming(["task_b", "task_c"]):
            assert _lease(storage, "r1").tasks == ["task_a", "task_b", "task_c"]
        await member.renew()
        assert _lease(storage, "r1").tasks == ["task_a", "task_b"]  # still claimed once
    await member.renew()
    assert _lease(storage, "r1").tasks == ["task_a"]


async def test_claim_is_released_when_the_block_fails(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    await member.join()
    with pytest.raises(RuntimeError):
        async with member.claiming(["task_b"]):
            raise RuntimeError("write failed")
    await member.renew()
    assert _lease(storage, "r1").tasks == []


async def test_renew_with_explicit_tasks_and_stopped(clock: FakeClock, storage: FakeStorage):
    held = Held()
    held.ids = {"task_a"}
    member = _member(storage, held=held)
    await member.join()
    await member.renew(["task_z"], stopped=True)
    lease = _lease(storage, "r1")
    assert lease.tasks == ["task_z"]
    assert lease.stopped


async def test_renew_after_the_lease_was_deleted_starts_a_new_one(
    clock: FakeClock, storage: FakeStorage
):
    member = _member(storage)
    await member.join()
    del storage.objects[(LEASES, "r1")]  # handled as dead by another replica
    await member.renew()
    assert (LEASES, "r1") in storage.objects
    await member.renew()  # and keeps renewing it with compare-and-swap
    assert storage.history[-1] == ("put_object", "r1")


async def test_renew_recovers_after_a_write_whose_reply_was_lost(
    clock: FakeClock, storage: FakeStorage
):
    """A renewal that reached storage but whose answer was lost must not leave the replica
    unable to renew (and so judged dead by the others) until its lease is deleted."""
    member = _member(storage)
    await member.join()
    storage.lose_reply("put_object")
    with pytest.raises(Unavailable):
        await member.renew()
    before = storage.objects[(LEASES, "r1")][1]
    await member.renew()
    assert storage.objects[(LEASES, "r1")][1] != before


# -- the others -----------------------------------------------------------------------------


async def test_unchanged_lease_is_dead_after_ttl(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2")
    assert await member.refresh() == []
    assert member.is_alive("r2")
    clock.advance(TTL)
    assert await member.refresh() == []  # exactly ttl: still alive
    clock.advance(0.1)
    dead = await member.refresh()
    assert [lease.name for lease in dead] == ["r2"]
    assert not member.is_alive("r2")
    assert member.alive == {"r1"}


async def test_changing_lease_stays_alive(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    for _ in range(5):
        write_lease(storage, "r2")
        assert await member.refresh() == []
        clock.advance(TTL * 0.8)
    assert member.is_alive("r2")
    assert member.alive == {"r1", "r2"}


async def test_stopped_lease_is_dead_at_once(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2", stopped=True, tasks=["t"])
    dead = await member.refresh()
    assert [lease.name for lease in dead] == ["r2"]
    assert dead[0].tasks == frozenset({"t"})
    assert not member.is_alive("r2")


async def test_own_replica_is_always_alive(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    await member.join()
    await member.refresh()
    clock.advance(TTL * 10)
    assert await member.refresh() == []
    assert member.is_alive("r1")


async def test_unknown_replica_counts_alive_for_ttl_after_start(clock: FakeClock, storage):
    member = _member(storage)
    assert member.is_alive("ghost")
    clock.advance(TTL + 1)
    assert not member.is_alive("ghost")


async def test_unreadable_lease_is_skipped_and_others_are_seen(clock: FakeClock, storage):
    member = _member(storage)
    storage.objects[(LEASES, "bad")] = (b"not json", "b1")
    storage.objects[(LEASES, "nofield")] = (json.dumps({"address": "x"}).encode(), "n1")
    write_lease(storage, "r2")
    assert await member.refresh() == []
    assert set(member.leases) == {"r2"}
    assert member.is_alive("r2")


def test_parse_lease() -> None:
    assert parse_lease("bad", b"{") is None
    assert parse_lease("bad", b"[1]") is None
    assert parse_lease("bad", b'{"address": "x"}') is None
    body = parse_lease("ok", LeaseBody(replica_id="r2", tasks=["t"]).model_dump_json().encode())
    assert body == LeaseBody(replica_id="r2", tasks=["t"])


async def test_refresh_after_a_storage_failure_judges_leases_afresh(clock: FakeClock, storage):
    member = _member(storage)
    write_lease(storage, "r2")
    await member.refresh()
    clock.advance(5)
    storage.fail("list_objects", Unavailable("storage down"))
    with pytest.raises(Unavailable):
        await member.refresh()
    clock.advance(TTL)  # nobody could renew meanwhile; r2's lease is unchanged
    assert await member.refresh() == []
    assert member.is_alive("r2")
    # From then on it is judged as usual.
    clock.advance(TTL + 0.1)
    assert [lease.name for lease in await member.refresh()] == ["r2"]


async def test_forget_drops_a_lease(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2")
    await member.refresh()
    member.forget("r2")
    member.forget("never-seen")
    assert "r2" not in member.leases


async def test_address_of(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2")
    write_lease(storage, "r3", stopped=True)
    await member.join()
    await member.refresh()
    assert member.address_of("r2") == "addr-r2"
    assert member.address_of("r1") == ""  # this one
    assert member.address_of("r3") == ""  # dead
    assert member.address_of("ghost") == ""  # unknown


# -- locate ---------------------------------------------------------------------------------


async def test_locate_held_task_is_served_here(clock: FakeClock, storage: FakeStorage):
    held = Held()
    task = _task_id("aa")
    held.ids = {task}
    member = _member(storage, held=held)
    write_lease(storage, "r2", tasks=[task], tag="aa")
    await member.refresh()
    assert member.locate(task, owner="r2") == ""


async def test_locate_by_live_owner_hint(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2")
    await member.refresh()
    assert member.locate(_task_id("aa"), owner="r2") == "addr-r2"


async def test_locate_dead_owner_hint_is_served_here(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    task = _task_id("aa")
    write_lease(storage, "r2", stopped=True)
    write_lease(storage, "r3", tasks=[task], tag="aa")
    await member.refresh()
    assert member.locate(task, owner="r2") == ""


async def test_locate_by_lease_listing(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    task = _task_id("aa")
    write_lease(storage, "r2", tag="aa")
    write_lease(storage, "r3", tasks=[task], tag="bb")
    await member.refresh()
    assert member.locate(task) == "addr-r3"


async def test_locate_skips_a_dead_lister_and_falls_back_to_the_creator_tag(
    clock: FakeClock, storage: FakeStorage
):
    member = _member(storage)
    task = _task_id("aa")
    write_lease(storage, "r2", tasks=[task], stopped=True)
    write_lease(storage, "r3", tag="aa")
    await member.refresh()
    assert member.locate(task) == "addr-r3"


async def test_locate_nothing_known_is_served_here(clock: FakeClock, storage: FakeStorage):
    member = _member(storage)
    write_lease(storage, "r2", tag="bb")
    write_lease(storage, "r3", tag="aa", stopped=True)  # its creator, dead
    await member.refresh()
    assert member.locate(_task_id("aa")) == ""
