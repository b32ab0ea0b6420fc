"""Files in tasks through the orchestrator's domain calls, over in-memory storage and files and
scripted workers: references checked at submission, jobs carrying the files' keys, result files
stored and shown, and temporary inputs deleted when a task ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from common.errors import InvalidInput
from common.principals import Principal, Role
from orchestrator.config import SectionsConfig, load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.membership import LeaseBody
from orchestrator.models import FileRef, TaskRecord, TaskState
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.servicer import result_message
from orchestrator.settings import OrchestratorSettings
from orchestrator.storage_client import LEASES
from orchestrator.worker_client import Outcome, Progress, SectionJob
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import (
    FakePeers,
    FakeStorage,
    FakeWorker,
    Step,
    eventually,
    pool_of,
    room,
)

ALICE = Principal(id="t/alice", tenant="t")
BOB = Principal(id="t/bob", tenant="t")
ADMIN = Principal(id="ops", tenant="", role=Role.ADMIN)
CONFIG = Path(__file__).resolve().parents[2] / "config.json"


def config_with_file_output() -> SectionsConfig:
    base = load_config(CONFIG)
    sections = dict(base.sections)
    sections["top_movers"] = sections["top_movers"].model_copy(update={"output": "file"})
    return SectionsConfig(sections=sections)


@dataclass
class World:
    orch: Orchestrator
    storage: FakeStorage
    workers: list[FakeWorker]
    failing: set[str] = field(default_factory=set)
    gate: asyncio.Event | None = None

    @property
    def files(self) -> dict[str, tuple[str, FileRef]]:
        return self.storage.files.files

    def plan(self, job: SectionJob) -> Sequence[Step]:
        steps: list[Step] = [Progress(conv_id=f"c-{job.section}")]
        if self.gate is not None:
            steps.append(self.gate)
        if job.section in self.failing:
            return [*steps, Outcome.failed("boom")]
        produced: tuple[FileRef, ...] = ()
        if job.output == "file":
            produced = (self.storage.files.add(job.owner_id, f"{job.task_id}_{job.section}.md"),)
        outcome = Outcome(
            success=True,
            response="" if produced else f"report {job.section}",
            cost=0.01,
            conv_id=f"c-{job.section}",
            message_id=f"m-{job.section}",
            files=produced,
        )
        return [*steps, outcome]

    @property
    def runs(self) -> list[SectionJob]:
        return [job for worker in self.workers for job in worker.runs]

    def job_of(self, section: str) -> SectionJob:
        return next(job for job in self.runs if job.section == section)

    async def finished(self, task_id: str) -> TaskRecord:
        """The task once its run is over, what its end does to its files included (the run is
        the asyncio task named after the task)."""

        def over() -> bool:
            return not any(t.get_name() == task_id for t in asyncio.all_tasks() if not t.done())

        await eventually(over, what=f"{task_id} finished")
        return await self.orch.get(task_id, ADMIN)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    storage = FakeStorage()
    # Two, so a job whose worker is lost goes to the other at once.
    workers = [FakeWorker(f"127.0.0.1:700{n}", reply=room(8)) for n in (1, 2)]
    settings = OrchestratorSettings(credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0)
    deps = Deps(
        storage=storage.as_client(),
        pool=await pool_of(*workers),
        config=config_with_file_output(),
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    peers = FakePeers()
    orch = Orchestrator(settings, deps, b"d" * 32, "addr-r1", peers=cast(Peers, peers))
    made = World(orch=orch, storage=storage, workers=workers)
    for worker in workers:
        worker.plan = made.plan
    yield made
    await orch.stop()


def records(*, movers: object = "AAPL +3%", snapshot: object = 1) -> list[str]:
    return [
        json.dumps({"Market Value": snapshot}),
        json.dumps({"top_movers_data": movers}),
    ]


def ref(file: FileRef) -> dict[str, str]:
    return {"file_id": file.file_id}


# -- submission -----------------------------------------------------------------------------


async def test_a_task_keeps_its_references_and_its_jobs_carry_the_files_keys(
    world: World,
) -> None:
    movers = world.storage.files.add(ALICE.id, "m.txt", temporary=True)
    table = world.storage.files.add(ALICE.id, "t.csv", "text/csv")
    sent = records(movers=[ref(movers), {"x": ref(table)}], snapshot=ref(table))

    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", sent)

    assert record.data == [json.loads(r) for r in sent]  # references, never content
    assert record.files == [table, movers]
    await world.finished(record.task_id)
    stored = world.storage.record(record.task_id)
    assert stored.files == [table, movers]
    snapshot_job, movers_job = world.job_of("portfolio_snapshot"), world.job_of("top_movers")
    assert snapshot_job.files == (table,)
    assert movers_job.files == (table, movers)
    assert movers_job.files[1].key == f"files/data/{movers.file_id.split('_')[1]}/{movers.file_id}"
    assert {snapshot_job.owner_id, movers_job.owner_id} == {ALICE.id}
    assert (snapshot_job.output, movers_job.output) == ("", "file")


@pytest.mark.parametrize("whose", ["missing", "expired", "bob's"])
async def test_a_file_the_caller_cannot_use_is_invalid_and_nothing_is_stored(
    world: World, whose: str
) -> None:
    owner = BOB.id if whose == "bob's" else ALICE.id
    file = world.storage.files.add(owner)
    if whose != "bob's":
        del world.files[file.file_id]  # storage answers an expired file as a missing one

    with pytest.raises(InvalidInput) as caught:
        await world.orch.submit(ALICE, "alice", "pw", "", records(movers={"f": ref(file)}))

    assert caught.value.message == f"data[1].top_movers_data.f: file {file.file_id} not found"
    assert world.storage.tasks == {}
    assert world.runs == []


async def test_an_admin_references_only_its_own_files(world: World) -> None:
    clients = world.storage.files.add(ALICE.id)
    with pytest.raises(InvalidInput, match="not found"):
        await world.orch.submit(ADMIN, "ops", "pw", "", records(movers=ref(clients)))

    own = world.storage.files.add(ADMIN.id)
    record, _ = await world.orch.submit(ADMIN, "ops", "pw", "", records(movers=ref(own)))
    assert record.files == [own]


async def test_a_repeated_submission_returns_the_task_even_once_its_temporary_file_is_gone(
    world: World,
) -> None:
    temporary = world.storage.files.add(ALICE.id, temporary=True)
    sent = records(movers=ref(temporary))
    first, _ = await world.orch.submit(ALICE, "alice", "pw", "", sent, "key-1")
    await world.finished(first.task_id)
    assert temporary.file_id not in world.files

    again, replayed = await world.orch.submit(ALICE, "alice", "pw", "", sent, "key-1")

    assert replayed and again.task_id == first.task_id


# -- results --------------------------------------------------------------------------------


async def test_result_files_are_stored_with_the_section_and_shown_in_the_result(
    world: World,
) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", records())
    done = await world.finished(record.task_id)

    assert done.status == TaskState.COMPLETED
    [produced] = world.storage.record(record.task_id).result_data["top_movers"].files
    assert produced.name == f"{record.task_id}_top_movers.md"
    assert produced.file_id in world.files
    assert done.result_data["portfolio_snapshot"].files == []
    shown = result_message(done).data["top_movers"]
    assert shown.response == ""
    assert [(f.file_id, f.name, f.size, f.sha256) for f in shown.files] == [
        (produced.file_id, produced.name, produced.size, produced.sha256)
    ]


async def test_a_redispatched_file_section_ends_with_one_result_file(world: World) -> None:
    lost = asyncio.Event()
    first = True

    def plan(job: SectionJob) -> Sequence[Step]:
        nonlocal first
        if job.section == "top_movers" and first:
            first = False
            # The worker stored the answer, then was lost before its result arrived.
            world.storage.files.add(job.owner_id, f"{job.task_id}_{job.section}.md")
            lost.set()
            return ["lost"]
        return World.plan(world, job)

    for worker in world.workers:
        worker.plan = plan
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", records())
    done = await world.finished(record.task_id)

    assert lost.is_set()
    assert done.result_data["top_movers"].dispatches == 2
    [kept] = done.result_data["top_movers"].files
    names = [f.name for _, f in world.files.values()]
    assert names == [f"{record.task_id}_top_movers.md"]
    assert kept.file_id in world.files


# -- the end of a task ----------------------------------------------------------------------


async def test_temporary_inputs_go_when_a_task_completes_and_stay_when_it_fails(
    world: World,
) -> None:
    temporary = world.storage.files.add(ALICE.id, temporary=True)
    kept = world.storage.files.add(ALICE.id)
    sent = records(movers=ref(temporary), snapshot=ref(kept))
    done = await world.finished((await world.orch.submit(ALICE, "a", "pw", "", sent))[0].task_id)
    assert done.status == TaskState.COMPLETED
    assert temporary.file_id not in world.files and kept.file_id in world.files

    world.failing = {"portfolio_snapshot"}
    again = world.storage.files.add(ALICE.id, temporary=True)
    sent = records(movers=ref(again))
    failed = await world.finished((await world.orch.submit(ALICE, "a", "pw", "", sent))[0].task_id)
    assert failed.status == TaskState.ERROR
    assert again.file_id in world.files


async def test_temporary_inputs_go_when_a_running_task_is_cancelled(world: World) -> None:
    world.gate = asyncio.Event()
    temporary = world.storage.files.add(ALICE.id, temporary=True)
    record, _ = await world.orch.submit(ALICE, "a", "pw", "", records(movers=ref(temporary)))
    await eventually(lambda: len(world.runs) == 2)

    cancelled = await asyncio.wait_for(world.orch.cancel(record.task_id, ALICE), 2)

    assert cancelled.status == TaskState.CANCELLED
    assert temporary.file_id not in world.files


async def test_temporary_inputs_go_when_the_cancel_is_written_for_an_unreachable_owner(
    world: World,
) -> None:
    temporary = world.storage.files.add(ALICE.id, temporary=True)
    task_id = "task_20260101000000_bb000001"
    world.storage.put_record(
        task_record(
            task_id=task_id,
            status=TaskState.PROCESSING,
            owner="r2",
            principal_id=ALICE.id,
            files=[temporary],
        )
    )
    lease = LeaseBody(replica_id="r2", address="addr-r2", tasks=[task_id], tag="bb")
    world.storage.objects[(LEASES, "r2")] = (lease.model_dump_json().encode(), "l1")
    await world.orch.membership.refresh()
    cast(FakePeers, world.orch.peers).answer = None

    cancelled = await world.orch.cancel(task_id, ALICE)

    assert cancelled.status == TaskState.CANCELLED
    assert temporary.file_id not in world.files
