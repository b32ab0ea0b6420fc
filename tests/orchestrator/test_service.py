"""The orchestrator's domain calls over in-memory storage, scripted workers and scripted peers,
with the real config.json: submit and idempotency, cancel, retry, watch, forwarding to the
replica that runs a task, and input validation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from common import task_ids
from common.errors import (
    AppError,
    Conflict,
    InvalidInput,
    NotFound,
    TooLarge,
    Unavailable,
    WrongState,
)
from common.principals import Principal, Role
from orchestrator import membership as membership_module
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.figures import TaskFigures
from orchestrator.idempotency import claim, request_digest
from orchestrator.membership import LeaseBody
from orchestrator.models import SectionResult, SectionState, TaskEvent, TaskRecord, TaskState
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.storage_client import LEASES
from orchestrator.worker_client import JobRejected, Load, Outcome, Progress, SectionJob
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import (
    FakeClock,
    FakePeers,
    FakeStorage,
    FakeWorker,
    Step,
    eventually,
    pool_of,
    room,
)

ALICE = Principal(id="alice-key", tenant="t")
BOB = Principal(id="bob-key", tenant="t")
ADMIN = Principal(id="ops", tenant="", role=Role.ADMIN)
SCOPE = f"{ALICE.id}\0alice"  # idempotency keys are scoped to the caller and the user
CONFIG = Path(__file__).resolve().parents[2] / "config.json"
DIGEST_KEY = b"d" * 32
SECTIONS = ["portfolio_snapshot", "top_movers", "model_and_rebalancing"]
RECORDS = [
    json.dumps({"Market Value": 1, "XIRR_SI": 2}),
    json.dumps({"top_movers_data": "AAPL +3%"}),
    json.dumps({"total_portfolio_mv": 10, "assets": []}),
]


@dataclass
class World:
    orch: Orchestrator
    storage: FakeStorage
    worker: FakeWorker
    peers: FakePeers
    failing: set[str] = field(default_factory=set)
    gate: asyncio.Event | None = None

    def plan(self, job: SectionJob) -> Sequence[Step]:
        steps: list[Step] = [Progress(conv_id=f"c-{job.section}")]
        if self.gate is not None:
            steps.append(self.gate)
        if job.section in self.failing:
            steps.append(Outcome.failed("boom"))
        else:
            steps.append(
                Outcome(
                    success=True,
                    response=f"report {job.section}",
                    cost=0.01,
                    conv_id=f"c-{job.section}",
                    message_id=f"m-{job.section}",
                )
            )
        return steps

    def runs_of(self, section: str) -> int:
        return sum(job.section == section for job in self.worker.runs)

    async def status(self, task_id: str) -> TaskState:
        return (await self.orch.get(task_id, ALICE)).status

    async def finished(self, task_id: str) -> TaskRecord:
        await eventually(lambda: task_id not in self.orch.runs, what=f"{task_id} finished")
        return await self.orch.get(task_id, ADMIN)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    storage = FakeStorage()
    worker = FakeWorker("127.0.0.1:7001", reply=room(8))
    pool = await pool_of(worker)
    settings = OrchestratorSettings(
        credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0, max_records=5
    )
    deps = Deps(
        storage=storage.as_client(),
        pool=pool,
        config=load_config(CONFIG),
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    peers = FakePeers()
    orch = Orchestrator(settings, deps, DIGEST_KEY, "addr-r1", peers=cast(Peers, peers))
    made = World(orch=orch, storage=storage, worker=worker, peers=peers)
    worker.plan = made.plan
    yield made
    await orch.stop()


# -- submit ---------------------------------------------------------------------------------


async def test_submit_stores_pending_and_the_task_completes(world: World) -> None:
    password = "a-password-of-alice"  # long enough never to turn up in random ciphertext
    record, replayed = await world.orch.submit(ALICE, "alice", password, "", RECORDS)

    assert not replayed
    assert record.status == TaskState.PENDING
    assert record.tenant == ALICE.tenant  # a key's tasks run in its tenant
    assert record.owner == "r1"
    assert record.section_detected == ", ".join(SECTIONS)
    assert password not in record.password_sealed
    assert task_ids.parse(record.task_id).tag == world.orch.membership.tag
    assert world.storage.history[0] == ("create", record.task_id)

    done = await world.finished(record.task_id)
    assert done.status == TaskState.COMPLETED
    stored = world.storage.record(record.task_id)
    assert stored.status == TaskState.COMPLETED
    assert stored.progress == 100
    assert stored.conv_id == ", ".join(f"c-{s}" for s in SECTIONS)
    assert {n: s.response for n, s in stored.result_data.items()} == {
        s: f"report {s}" for s in SECTIONS
    }
    assert all(s.dispatches == 1 for s in stored.result_data.values())
    assert len(world.worker.authentications) == 1
    assert world.worker.authentications[0].password == password
    stats = await world.orch.stats()
    assert (stats.tasks_submitted, stats.tasks_finished, stats.tasks_running) == (
        1,
        {"completed": 1},
        0,
    )


async def test_rejected_credentials_end_the_task_in_error(world: World) -> None:
    world.worker.auth_error = JobRejected(world.worker.address, "bad password")
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(record.task_id)
    assert done.status == TaskState.ERROR
    assert done.message == "Authentication failed: bad password"
    assert world.worker.runs == []


async def test_same_key_and_body_replays_the_task(world: World) -> None:
    first, replayed_first = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")
    second, replayed_second = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")

    assert not replayed_first
    assert replayed_second
    assert second.task_id == first.task_id
    assert list(world.storage.tasks) == [first.task_id]

    await world.finished(first.task_id)
    third, replayed_third = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")
    assert replayed_third
    assert third.task_id == first.task_id
    assert third.status == TaskState.COMPLETED
    assert world.orch.submitted == 1


async def test_same_key_with_another_body_is_a_conflict(world: World) -> None:
    await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")
    with pytest.raises(Conflict, match="different request"):
        await world.orch.submit(ALICE, "alice", "pw", "", RECORDS[:2], "key-1")
    with pytest.raises(Conflict):
        await world.orch.submit(ALICE, "alice", "other-pw", "", RECORDS, "key-1")
    assert len(world.storage.tasks) == 1


async def test_same_key_of_another_user_is_another_task(world: World) -> None:
    first, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")
    second, replayed = await world.orch.submit(ALICE, "bob", "pw", "", RECORDS, "key-1")
    assert not replayed
    assert second.task_id != first.task_id


async def test_claimed_key_whose_task_was_never_written_writes_it(world: World) -> None:
    records = [json.loads(r) for r in RECORDS]
    request = {"username": "alice", "password": "pw", "tenant": ALICE.tenant, "records": records}
    digest = request_digest(DIGEST_KEY, request)
    claimed_id = "task_20260101000000_aa123456"
    await claim(world.storage.as_client(), SCOPE, "key-1", digest, claimed_id)

    record, replayed = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-1")

    assert not replayed
    assert record.task_id == claimed_id
    assert claimed_id in world.storage.tasks
    # That id is older than this replica's last lease renewal, where a takeover would not look
    # for it: the lease listed it before it was stored.
    lease = world.storage.history.index(("put_object", "r1"))
    assert lease < world.storage.history.index(("create", claimed_id))
    assert (await world.finished(claimed_id)).status == TaskState.COMPLETED


async def test_a_fresh_task_costs_no_lease_write(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-2")
    await world.finished(record.task_id)
    assert ("put_object", "r1") not in world.storage.history


async def test_a_keyed_task_stored_although_the_answer_was_lost_runs_and_a_repeat_finds_it(
    world: World,
) -> None:
    world.storage.lose_reply("create")  # stored, then storage_svc died before it answered

    with pytest.raises(Unavailable):
        await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-3")
    [task_id] = world.storage.tasks
    again, replayed = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-3")

    assert (again.task_id, replayed) == (task_id, True)
    assert (await world.finished(task_id)).status == TaskState.COMPLETED
    assert world.storage.history.count(("create", task_id)) == 1
    assert len(world.worker.runs) == len(SECTIONS)  # run once


async def test_an_unkeyed_task_stored_although_the_answer_was_lost_ends_in_error(
    world: World,
) -> None:
    world.storage.lose_reply("create")

    with pytest.raises(Unavailable):
        await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    [task_id] = world.storage.tasks

    await eventually(lambda: world.storage.record(task_id).status == TaskState.ERROR)
    assert world.storage.record(task_id).message.startswith("Task failed: storage became")
    assert world.worker.runs == []  # its client was told it was not taken: it never runs


async def test_a_task_not_stored_when_storage_went_away_is_not_run(world: World) -> None:
    world.storage.fail("create", Unavailable("storage unavailable"))
    world.storage.fail("get", Unavailable("storage unavailable"))  # looked for again later

    with pytest.raises(Unavailable):
        await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "key-4")

    def looks() -> int:
        return sum(operation == "get" for operation, _ in world.storage.calls)

    await eventually(lambda: looks() == 2, timeout=3, what="looked for once storage answers")
    assert world.storage.tasks == {}
    assert world.orch.runs == {}
    assert world.worker.runs == []


async def test_replay_of_an_orphan_takes_it_over(world: World) -> None:
    records = [json.loads(r) for r in RECORDS]
    request = {"username": "alice", "password": "pw", "tenant": ALICE.tenant, "records": records}
    task_id = "task_20260101000000_aa123456"
    await claim(world.storage.as_client(), SCOPE, "k", request_digest(DIGEST_KEY, request), task_id)
    # Stored by this replica's earlier life, never run since.
    orphan = task_record(
        task_id=task_id,
        username="alice",
        tenant=ALICE.tenant,
        principal_id=ALICE.id,
        password_sealed=world.orch.deps.sealer.seal("pw", task_id, ALICE.tenant, "alice"),
        data=records,
        result_data={
            s: SectionResult(record_index=i, asset_id="a") for i, s in enumerate(SECTIONS)
        },
        owner="r1",
    )
    world.storage.put_record(orphan)

    record, replayed = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k")

    assert replayed
    assert record.task_id == task_id
    done = await world.finished(task_id)
    assert done.status == TaskState.COMPLETED
    assert world.storage.record(task_id).takeovers == 1


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_of_a_running_task(world: World) -> None:
    world.gate = asyncio.Event()  # jobs never finish
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await eventually(lambda: len(world.worker.runs) == 3)

    cancelled = await asyncio.wait_for(world.orch.cancel(record.task_id, ALICE), 2)

    assert cancelled.status == TaskState.CANCELLED
    stored = world.storage.record(record.task_id)
    assert stored.status == TaskState.CANCELLED
    assert {s.status for s in stored.result_data.values()} == {SectionState.CANCELLED}
    assert record.task_id not in world.orch.runs
    assert world.orch.deps.pool.stats().running == 0
    assert world.peers.calls == []


async def test_cancel_of_a_finished_task_is_wrong_state(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)
    with pytest.raises(WrongState, match="already finished as completed"):
        await world.orch.cancel(record.task_id, ALICE)
    assert world.storage.record(record.task_id).status == TaskState.COMPLETED


async def test_cancel_of_a_stored_task_nobody_runs_is_done_here(world: World) -> None:
    task_id = "task_20260101000000_bb000001"
    world.storage.put_record(
        task_record(
            task_id=task_id, status=TaskState.PROCESSING, owner="gone", principal_id=ALICE.id
        )
    )
    cancelled = await world.orch.cancel(task_id, ALICE)
    assert cancelled.status == TaskState.CANCELLED
    assert world.storage.record(task_id).status == TaskState.CANCELLED
    assert world.peers.calls == []


async def test_cancel_of_an_unknown_task_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.orch.cancel("task_20260101000000_bb000001", ALICE)
    with pytest.raises(InvalidInput):
        await world.orch.cancel("not-a-task", ALICE)


# -- retry ----------------------------------------------------------------------------------


async def test_retry_reruns_only_the_failed_sections(world: World) -> None:
    world.failing = {"top_movers"}
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    failed = await world.finished(record.task_id)
    assert failed.status == TaskState.ERROR
    assert world.storage.record(record.task_id).status == TaskState.ERROR

    world.failing = set()
    reopened = await world.orch.retry(record.task_id, ALICE)

    # The answer is the reopened task (already running again here).
    assert not reopened.status.terminal
    assert reopened.owner == "r1"
    assert reopened.takeovers == 0
    assert record.task_id in world.orch.runs or world.runs_of("top_movers") == 2
    done = await world.finished(record.task_id)
    assert done.status == TaskState.COMPLETED
    assert world.storage.record(record.task_id).status == TaskState.COMPLETED
    assert {s: world.runs_of(s) for s in SECTIONS} == {
        "portfolio_snapshot": 1,
        "top_movers": 2,
        "model_and_rebalancing": 1,
    }


async def test_retry_of_a_task_not_in_error_is_wrong_state(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)
    with pytest.raises(WrongState, match="only a task that ended in error"):
        await world.orch.retry(record.task_id, ALICE)


async def test_retry_of_a_running_task_is_wrong_state(world: World) -> None:
    world.gate = asyncio.Event()
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    with pytest.raises(WrongState, match="is running"):
        await world.orch.retry(record.task_id, ALICE)
    world.gate.set()
    await world.finished(record.task_id)


# -- watch ----------------------------------------------------------------------------------


async def _collect(events: AsyncIterator[TaskEvent], into: list[TaskEvent]) -> None:
    async for event in events:
        into.append(event)


async def test_watch_yields_events_until_the_terminal_one(world: World) -> None:
    world.gate = asyncio.Event()
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    seen: list[TaskEvent] = []
    watcher = asyncio.create_task(_collect(world.orch.watch(record.task_id, ALICE), seen))
    await eventually(lambda: len(seen) >= 1)
    world.gate.set()

    await asyncio.wait_for(watcher, 3)

    assert seen[-1].terminal
    assert seen[-1].status == "completed"
    assert seen[-1].progress == 100
    # Only the events of the one write that finished the task come after the first terminal.
    first_end = next(i for i, e in enumerate(seen) if e.terminal)
    assert all(e.terminal for e in seen[first_end:])
    assert first_end > 0
    assert all(e.task_id == record.task_id for e in seen)
    progress = [e.progress for e in seen]
    assert progress == sorted(progress)
    assert {e.section for e in seen} >= set(SECTIONS)


async def test_watch_of_a_finished_task_yields_it_once(world: World) -> None:
    task_id = "task_20260101000000_bb000001"
    world.storage.put_record(
        task_record(task_id=task_id, status=TaskState.ERROR, progress=100, principal_id=ALICE.id)
    )
    seen: list[TaskEvent] = []
    await asyncio.wait_for(_collect(world.orch.watch(task_id, ALICE), seen), 2)
    assert [(e.status, e.progress) for e in seen] == [("error", 100)]


# -- forwarding to the replica that runs the task -------------------------------------------


OTHERS_TASK = "task_20260101000000_bb000001"


async def _owned_by_r2(world: World, status: TaskState) -> None:
    record = task_record(task_id=OTHERS_TASK, status=status, owner="r2", principal_id=ALICE.id)
    world.storage.put_record(record)
    lease = LeaseBody(replica_id="r2", address="addr-r2", tasks=[OTHERS_TASK], tag="bb")
    world.storage.objects[(LEASES, "r2")] = (lease.model_dump_json().encode(), "l1")
    await world.orch.membership.refresh()
    assert world.orch.locate(OTHERS_TASK) == "addr-r2"


async def test_cancel_goes_to_the_owner(world: World) -> None:
    await _owned_by_r2(world, TaskState.PROCESSING)
    writes = len(world.storage.history)

    record = await world.orch.cancel(OTHERS_TASK, ALICE)

    assert world.peers.calls == [("cancel", "addr-r2", OTHERS_TASK)]
    assert len(world.storage.history) == writes  # the owner writes it, not this replica
    assert record.task_id == OTHERS_TASK


async def test_cancel_is_done_here_when_the_owner_is_unreachable(world: World) -> None:
    await _owned_by_r2(world, TaskState.PROCESSING)
    world.peers.answer = None

    record = await world.orch.cancel(OTHERS_TASK, ALICE)

    assert world.peers.calls == [("cancel", "addr-r2", OTHERS_TASK)]
    assert record.status == TaskState.CANCELLED
    assert world.storage.record(OTHERS_TASK).status == TaskState.CANCELLED


async def test_retry_goes_to_the_owner(world: World) -> None:
    await _owned_by_r2(world, TaskState.ERROR)

    record = await world.orch.retry(OTHERS_TASK, ALICE)

    assert world.peers.calls == [("retry", "addr-r2", OTHERS_TASK)]
    assert record.status == TaskState.ERROR  # as stored; the owner reruns it
    assert world.orch.runs == {}


async def test_watch_goes_to_the_owner(world: World) -> None:
    await _owned_by_r2(world, TaskState.PROCESSING)
    events = [
        TaskEvent(OTHERS_TASK, "processing", 50, "Processing", "t1"),
        TaskEvent(OTHERS_TASK, "completed", 100, "All done", "t2"),
    ]
    world.peers.events = events
    seen: list[TaskEvent] = []

    await asyncio.wait_for(_collect(world.orch.watch(OTHERS_TASK, ALICE), seen), 2)

    assert seen == events
    assert world.peers.calls == [("watch", "addr-r2", OTHERS_TASK)]


async def test_watch_falls_back_to_storage_when_the_owner_stream_ends_early(world: World):
    await _owned_by_r2(world, TaskState.CANCELLED)
    world.peers.events = [TaskEvent(OTHERS_TASK, "processing", 50, "Processing", "t1")]
    seen: list[TaskEvent] = []

    await asyncio.wait_for(_collect(world.orch.watch(OTHERS_TASK, ALICE), seen), 2)

    assert [e.status for e in seen] == ["processing", "cancelled"]


async def test_forwarded_watch_is_not_forwarded_again(world: World) -> None:
    await _owned_by_r2(world, TaskState.COMPLETED)
    seen: list[TaskEvent] = []
    await asyncio.wait_for(_collect(world.orch.watch(OTHERS_TASK, ALICE, forwarded=True), seen), 2)
    assert [e.status for e in seen] == ["completed"]
    assert world.peers.calls == []


# -- reads ----------------------------------------------------------------------------------


async def test_get_and_list(world: World) -> None:
    world.gate = asyncio.Event()
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await eventually(lambda: len(world.worker.runs) == 3)
    live = await world.orch.get(record.task_id, ALICE)
    assert live.status == TaskState.PROCESSING  # from memory; storage still says pending
    assert world.storage.record(record.task_id).status == TaskState.PENDING

    listed, token = await world.orch.list(ALICE, 10, "", "")
    assert [r.status for r in listed] == [TaskState.PROCESSING]
    assert token == ""
    with pytest.raises(InvalidInput):
        await world.orch.list(ALICE, 101, "", "")
    with pytest.raises(InvalidInput, match="status"):
        await world.orch.list(ALICE, 10, "bogus", "")
    with pytest.raises(NotFound):
        await world.orch.get("task_20260101000000_bb000001", ALICE)
    world.gate.set()
    await world.finished(record.task_id)


# -- validation -----------------------------------------------------------------------------


def _nested(depth: int) -> str:
    """A record for the top_movers section whose value is nested ``depth`` levels in all."""
    return '{"top_movers_data": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


@pytest.mark.parametrize(
    ("username", "password", "tenant", "records", "error", "match"),
    [
        ("", "pw", "", RECORDS, InvalidInput, "username"),
        ("   ", "pw", "", RECORDS, InvalidInput, "username"),
        ("u" * 257, "pw", "", RECORDS, InvalidInput, "username"),
        ("alice", "", "", RECORDS, InvalidInput, "password"),
        ("alice", "p" * 1025, "", RECORDS, InvalidInput, "password"),
        ("alice", "pw", "bad tenant!", RECORDS, InvalidInput, "tenant"),
        ("alice", "pw", "t" * 65, RECORDS, InvalidInput, "tenant"),
        ("alice", "pw", "", [], InvalidInput, "at least one record"),
        ("alice", "pw", "", RECORDS * 2, TooLarge, "at most 5 records"),
        ("alice", "pw", "", ["{not json"], InvalidInput, r"data\[0\]: not valid JSON"),
        ("alice", "pw", "", [RECORDS[0], "{}"], InvalidInput, r"data\[1\]: must be a non-empty"),
        ("alice", "pw", "", ["[1, 2]"], InvalidInput, "must be a non-empty JSON object"),
        ("alice", "pw", "", ["[" * 100_000 + "]" * 100_000], InvalidInput, "nested too deeply"),
        # Deep enough to be stored and never parsed back, before records were limited.
        ("alice", "pw", "", [_nested(220)], InvalidInput, "nested deeper than 32 levels"),
        ("alice", "pw", "", [_nested(33)], InvalidInput, "nested deeper than 32 levels"),
        ("alice", "pw", "", ['{"x": "' + "a" * 300_000 + '"}'], TooLarge, "larger than"),
        ("alice", "pw", "", ['{"unknown": 1}'], InvalidInput, "matches no section"),
        ("alice", "pw", "", [RECORDS[1], RECORDS[1]], InvalidInput, "both feed section"),
    ],
)
async def test_submit_rejects_bad_input(
    world: World,
    username: str,
    password: str,
    tenant: str,
    records: list[str],
    error: type[AppError],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        await world.orch.submit(ALICE, username, password, tenant, records)
    assert world.storage.tasks == {}


async def test_submit_accepts_a_valid_tenant_and_rejects_a_bad_key(world: World) -> None:
    record, _ = await world.orch.submit(ADMIN, "alice", "pw", "acme.eu-1_x", RECORDS[:1])
    assert record.tenant == "acme.eu-1_x"
    with pytest.raises(InvalidInput, match="your key belongs to tenant 't'"):
        await world.orch.submit(ALICE, "alice", "pw", "acme", RECORDS[:1])
    with pytest.raises(InvalidInput, match="idempotency key"):
        await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "bad\nkey")
    await world.finished(record.task_id)


# -- ownership ------------------------------------------------------------------------------


async def test_another_owners_task_is_not_found_everywhere(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    world.gate = asyncio.Event()  # nothing runs to the end meanwhile
    unknown = "task_20260101000000_bb0000ff"
    with pytest.raises(NotFound) as missing:
        await world.orch.get(unknown, BOB)
    for call in (
        world.orch.get(record.task_id, BOB),
        world.orch.cancel(record.task_id, BOB),
        world.orch.retry(record.task_id, BOB),
        _collect(world.orch.watch(record.task_id, BOB), []),
    ):
        with pytest.raises(NotFound) as caught:
            await call
        # The same words as for a task that does not exist: ids cannot be probed.
        assert str(caught.value) == str(missing.value).replace(unknown, record.task_id)
    world.gate.set()
    done = await world.finished(record.task_id)
    assert done.principal_id == ALICE.id
    for call in (world.orch.get(done.task_id, BOB), world.orch.retry(done.task_id, BOB)):
        with pytest.raises(NotFound):
            await call
    assert (await world.orch.get(done.task_id, ALICE)).status == TaskState.COMPLETED


async def test_a_task_without_an_owner_is_seen_by_admins_only(world: World) -> None:
    task_id = "task_20260101000000_bb000010"
    world.storage.put_record(task_record(task_id=task_id, status=TaskState.COMPLETED))
    with pytest.raises(NotFound):
        await world.orch.get(task_id, ALICE)
    with pytest.raises(NotFound):
        await world.orch.get(task_id, Principal(id="", tenant=""))
    assert (await world.orch.get(task_id, ADMIN)).task_id == task_id


async def test_listing_asks_storage_for_the_callers_own_tasks(world: World) -> None:
    mine = [(await world.orch.submit(ALICE, "alice", "pw", "", RECORDS))[0] for _ in range(2)]
    theirs, _ = await world.orch.submit(BOB, "bob", "pw", "", RECORDS)
    for record in (*mine, theirs):
        await world.finished(record.task_id)

    listed, _ = await world.orch.list(ALICE, 10, "", "")
    assert {r.task_id for r in listed} == {r.task_id for r in mine}
    everyone, _ = await world.orch.list(ADMIN, 10, "", "")
    assert {r.task_id for r in everyone} == {r.task_id for r in (*mine, theirs)}
    bobs, _ = await world.orch.list(ADMIN, 10, "", "", owner=BOB.id)
    assert [r.task_id for r in bobs] == [theirs.task_id]
    with pytest.raises(InvalidInput, match="only admins"):
        await world.orch.list(ALICE, 10, "", "", owner=BOB.id)


async def test_forwarded_calls_carry_the_caller(world: World) -> None:
    await _owned_by_r2(world, TaskState.PROCESSING)
    world.peers.events = [TaskEvent(OTHERS_TASK, "completed", 100, "All done", "t2")]
    await world.orch.cancel(OTHERS_TASK, ALICE)
    await asyncio.wait_for(_collect(world.orch.watch(OTHERS_TASK, ALICE), []), 2)
    assert world.peers.callers == [ALICE, ALICE]


async def test_idempotency_keys_of_two_callers_never_meet(world: World) -> None:
    first, _ = await world.orch.submit(ALICE, "same-user", "pw", "", RECORDS, "k")
    second, replayed = await world.orch.submit(BOB, "same-user", "pw", "", RECORDS, "k")
    assert not replayed
    assert second.task_id != first.task_id


async def test_a_replay_does_not_take_a_task_from_a_replica_started_since_the_last_scan(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(membership_module, "time", clock)
    world.orch.membership._started = clock.monotonic()  # this replica has run a while
    clock.advance(60)
    records = [json.loads(r) for r in RECORDS]
    request = {"username": "alice", "password": "pw", "tenant": ALICE.tenant, "records": records}
    task_id = "task_20260101000000_ab123456"
    await claim(world.storage.as_client(), SCOPE, "k", request_digest(DIGEST_KEY, request), task_id)
    world.storage.put_record(
        task_record(
            task_id=task_id,
            status=TaskState.PROCESSING,
            username="alice",
            tenant=ALICE.tenant,
            principal_id=ALICE.id,
            data=records,
            owner="r9",
        )
    )
    # r9 started a moment ago: its lease is in storage, not yet in this replica's view.
    lease = LeaseBody(replica_id="r9", address="addr-r9", tag="ab")
    world.storage.objects[(LEASES, "r9")] = (lease.model_dump_json().encode(), "l1")

    record, replayed = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k")

    assert replayed and record.task_id == task_id
    assert world.storage.record(task_id).owner == "r9"  # left to its live owner
    assert task_id not in world.orch.runs


async def test_a_repeat_while_the_first_is_being_stored_here_does_not_run_it_twice(
    world: World,
) -> None:
    stored_late = asyncio.Event()
    create = world.storage.create

    async def create_answering_late(record: TaskRecord, owner: str = "") -> str:
        version = await create(record, owner)  # stored...
        await stored_late.wait()  # ...but its answer is not back yet
        return version

    world.storage.create = create_answering_late  # type: ignore[method-assign]
    first = asyncio.create_task(world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k"))
    await eventually(lambda: bool(world.storage.tasks), what="the first submission stored")

    again, replayed = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k")
    stored_late.set()
    record, _ = await first

    assert replayed and again.task_id == record.task_id
    await world.finished(record.task_id)
    assert [world.runs_of(section) for section in SECTIONS] == [1, 1, 1]


async def test_a_repeat_whose_read_returns_after_the_first_started_does_not_run_it_twice(
    world: World,
) -> None:
    create_answered, get_answered, get_asked = asyncio.Event(), asyncio.Event(), asyncio.Event()
    create, get = world.storage.create, world.storage.get

    async def create_answering_late(record: TaskRecord, owner: str = "") -> str:
        version = await create(record, owner)
        await create_answered.wait()
        return version

    async def get_answering_late(task_id: str) -> tuple[TaskRecord, str]:
        found = await get(task_id)
        get_asked.set()
        await get_answered.wait()
        return found

    world.storage.create = create_answering_late  # type: ignore[method-assign]
    world.storage.get = get_answering_late  # type: ignore[method-assign]
    world.gate = asyncio.Event()  # the sections wait: the task's version stays as stored
    first = asyncio.create_task(world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k"))
    await eventually(lambda: bool(world.storage.tasks), what="the first submission stored")
    again = asyncio.create_task(world.orch.submit(ALICE, "alice", "pw", "", RECORDS, "k"))
    await asyncio.wait_for(get_asked.wait(), 2)  # the repeat read the task, not yet running
    create_answered.set()
    record, _ = await first  # the first submission starts the task meanwhile
    get_answered.set()
    repeated, replayed = await again
    world.gate.set()

    assert replayed and repeated.task_id == record.task_id
    await world.finished(record.task_id)
    assert [world.runs_of(section) for section in SECTIONS] == [1, 1, 1]
    assert world.storage.record(record.task_id).takeovers == 0


async def test_a_task_is_never_started_twice_on_one_replica(world: World) -> None:
    world.gate = asyncio.Event()  # the first run stays busy
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    first = world.orch.runs[record.task_id]

    again = world.orch._launch(world.storage.record(record.task_id), "v-stale")

    assert again is first and world.orch.admission.in_flight(ALICE.id) == 1
    world.gate.set()
    await world.finished(record.task_id)
    assert [world.runs_of(section) for section in SECTIONS] == [1, 1, 1]


# -- protected calls: who pays, and the chain each job carries ---------------------------


async def test_jobs_carry_the_sections_chain_and_the_principals_tenant(world: World) -> None:
    operator = Principal(id="ops-key", tenant="house", role=Role.ADMIN)
    record, _ = await world.orch.submit(operator, "alice", "pw", "acme", RECORDS)

    await world.finished(record.task_id)
    assert (record.tenant, record.principal_tenant) == ("acme", "house")
    config = load_config(CONFIG)
    for job in world.worker.runs:
        chain = config.sections[job.section].chain
        assert len(chain) > 1
        assert (job.asset_id, job.assets) == (chain[0], chain)
        assert (job.tenant, job.principal_tenant) == ("acme", "house")


async def test_a_clients_task_is_paid_by_its_own_tenant(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)
    assert world.storage.record(record.task_id).principal_tenant == ALICE.tenant
    assert {job.principal_tenant for job in world.worker.runs} == {ALICE.tenant}


# -- the dashboard's figures and reads ------------------------------------------------------


async def test_stats_count_unfinished_tasks_by_state_and_sum_the_live_replicas(
    world: World,
) -> None:
    world.gate = asyncio.Event()  # jobs hold until released
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await eventually(lambda: len(world.worker.runs) == len(SECTIONS), what="sections running")

    own = await world.orch.stats()
    assert own.tasks_by_state == {
        "pending": 0,
        "authenticating": 0,
        "authenticated": 0,
        "detecting_section": 0,
        "processing": 1,
    }
    assert (own.tasks_running, own.replicas_counted) == (1, 1)
    assert world.peers.calls == []  # a replica's own figures ask nobody

    lease = LeaseBody(replica_id="r2", address="addr-r2", tag="bb")
    world.storage.objects[(LEASES, "r2")] = (lease.model_dump_json().encode(), "l1")
    await world.orch.membership.refresh()
    world.peers.figures["addr-r2"] = TaskFigures(
        by_state={"pending": 2, "processing": 1},
        running=3,
        submitted=7,
        finished={"completed": 3, "error": 1},
        taken_over=1,
    )
    summed = await world.orch.stats(all_replicas=True)
    assert summed.tasks_by_state["processing"] == 2
    assert summed.tasks_by_state["pending"] == 2
    assert (summed.tasks_running, summed.tasks_submitted, summed.tasks_taken_over) == (4, 8, 1)
    assert summed.tasks_finished == {"completed": 3, "error": 1}
    assert summed.replicas_counted == 2

    del world.peers.figures["addr-r2"]  # r2 does not answer: counted out, not a failure
    assert (await world.orch.stats(all_replicas=True)).replicas_counted == 1
    world.gate.set()
    await world.finished(record.task_id)


async def test_stats_carry_what_the_ready_workers_report_of_the_platform(world: World) -> None:
    world.worker.reply = Load(
        capacity=8,
        in_flight=5,
        accepting=True,
        spend_day="2026-03-01",
        spend_today={"acme": 1.25},
        breakers={"asset-a": "open"},
    )
    await world.orch.deps.pool.refresh()

    platform = (await world.orch.stats()).platform
    assert platform.in_flight == 5  # the worker's own count, every orchestrator's jobs
    assert (platform.spend_day, platform.spend_today) == ("2026-03-01", {"acme": 1.25})
    assert platform.breakers == {"asset-a": "open"}


async def test_an_admin_lists_one_tenants_tasks_and_a_client_may_not_filter_by_tenant(
    world: World,
) -> None:
    for n, tenant in enumerate(["acme", "beta", "acme"]):
        world.storage.put_record(
            task_record(task_id=f"task_2026010100000{n}_0000000{n}", tenant=tenant)
        )

    listed, _ = await world.orch.list(ADMIN, 10, "", "", tenant="acme")
    assert [r.task_id for r in listed] == [
        "task_20260101000002_00000002",
        "task_20260101000000_00000000",
    ]

    with pytest.raises(InvalidInput, match="tenant: only admins"):
        await world.orch.list(ALICE, 10, "", "", tenant="acme")
    with pytest.raises(InvalidInput, match="tenant: letters"):
        await world.orch.list(ADMIN, 10, "", "", tenant="acme/ann")


async def test_a_tasks_input_is_read_as_stored_for_its_owner_only(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)  # finished: memory keeps no records, storage does

    shown = await world.orch.input(record.task_id, ALICE)
    assert shown.data == [json.loads(r) for r in RECORDS]
    assert (await world.orch.input(record.task_id, ADMIN)).data == shown.data
    with pytest.raises(NotFound):
        await world.orch.input(record.task_id, BOB)
