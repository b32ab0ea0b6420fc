"""Never paying twice for a prompt, in the orchestrator over in-memory storage and scripted
workers: the ids of an accepted prompt are stored at once (an answer that comes meanwhile is
stored with them, never before them), and a section with a
stored message and no answer — after a lost worker, a takeover, a retry — is dispatched to
resume that message, on the worker that sent it when it has room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from common.principals import Principal
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.models import SectionResult, SectionState, TaskRecord, TaskState
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.worker_client import Outcome, Progress, SectionJob
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import (
    LOST,
    FakePeers,
    FakeStorage,
    FakeWorker,
    Plan,
    Step,
    eventually,
    pool_of,
)
from tests.orchestrator.fakes import room as free_slots

ALICE = Principal(id="alice-key", tenant="t")
CONFIG = Path(__file__).resolve().parents[2] / "config.json"
SECTION = "top_movers"
ASSET = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"
RECORD = {"top_movers_data": "AAPL +3%"}
SENT = Progress(conv_id="c1", message_id="m1", asset_id=ASSET)


def _answer(job: SectionJob) -> Outcome:
    message = job.resume_message_id or "m1"
    return Outcome(True, f"report of {message}", 0.01, job.resume_conv_id or "c1", message)


@dataclass
class World:
    orch: Orchestrator
    storage: FakeStorage
    workers: list[FakeWorker]
    # The steps of each job dispatched, in order (the last repeats); the job's answer follows
    # unless the steps end the job themselves (an outcome, or LOST).
    scripts: list[list[Step]] = field(default_factory=lambda: [[SENT]])
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: list[tuple[str, SectionJob]] = field(default_factory=list)  # (worker, job), in order

    def plan_of(self, worker: FakeWorker) -> Plan:
        def plan(job: SectionJob) -> Sequence[Step]:
            self.jobs.append((worker.address, job))
            steps = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
            if any(isinstance(step, Outcome) for step in steps) or steps[-1:] == [LOST]:
                return steps
            return [*steps, _answer(job)]

        return plan

    def updates(self, task_id: str) -> int:
        return self.storage.history.count(("update", task_id))

    def home(self, task_id: str) -> FakeWorker:
        worker = self.orch.deps.pool.home(f"{task_id}:{SECTION}")
        assert worker is not None
        return next(w for w in self.workers if w.address == worker.address)

    async def finished(self, task_id: str) -> TaskRecord:
        await eventually(lambda: task_id not in self.orch.runs, what=f"{task_id} finished")
        return self.storage.record(task_id)

    def orphan(self, task_id: str, **section: object) -> tuple[TaskRecord, str]:
        """A one-section task a dead replica was running, as it stored it."""
        record = task_record(
            task_id=task_id,
            username="alice",
            tenant=ALICE.tenant,
            principal_id=ALICE.id,
            password_sealed=self.orch.deps.sealer.seal("pw", task_id, ALICE.tenant, "alice"),
            data=[RECORD],
            status=TaskState.PROCESSING,
            result_data={
                SECTION: SectionResult(
                    status=SectionState.RUNNING,
                    record_index=0,
                    asset_id=ASSET,
                    **section,  # type: ignore[arg-type]
                )
            },
            owner="ghost",
        )
        return record, self.storage.put_record(record)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    storage = FakeStorage()
    workers = [FakeWorker(f"127.0.0.1:700{n}", reply=free_slots(4)) for n in (1, 2)]
    deps = Deps(
        storage=storage.as_client(),
        pool=await pool_of(*workers),
        config=load_config(CONFIG),
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    settings = OrchestratorSettings(credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0)
    orch = Orchestrator(settings, deps, b"d" * 32, "addr-r1", peers=cast(Peers, FakePeers()))
    made = World(orch, storage, workers)
    for worker in workers:
        worker.plan = made.plan_of(worker)
    yield made
    made.gate.set()
    await orch.stop()


async def _submit(world: World) -> str:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", [json.dumps(RECORD)])
    return record.task_id


async def _take_over(world: World, record: TaskRecord, version: str) -> None:
    async with world.orch.membership.claiming([record.task_id]):
        assert await world.orch.takeover.take_over(record, version) == 1


# -- the ids are stored as soon as the platform accepts the prompt ---------------------------


async def test_an_accepted_prompt_is_stored_before_the_job_goes_on(world: World) -> None:
    world.scripts = [[Progress(conv_id="c1", asset_id=ASSET), SENT, world.gate]]
    task_id = await _submit(world)

    await eventually(lambda: world.updates(task_id) == 1, what="the prompt stored")
    stored = world.storage.record(task_id).result_data[SECTION]
    [(worker, _)] = world.jobs
    assert (stored.conv_id, stored.message_id, stored.conv_asset_id, stored.worker) == (
        "c1",
        "m1",
        ASSET,
        worker,
    )
    assert stored.status == SectionState.RUNNING

    world.gate.set()
    done = await world.finished(task_id)
    assert done.status == TaskState.COMPLETED
    assert world.updates(task_id) == 2  # the prompt, then the answer


async def test_an_answer_that_comes_while_its_prompt_waits_for_a_write_shares_that_write(
    world: World,
) -> None:
    snapshot = "portfolio_snapshot"
    movers_answer, snapshot_answer = asyncio.Event(), asyncio.Event()
    scripts: dict[str, list[Step]] = {
        snapshot: [Progress(conv_id="c2", message_id="m2", asset_id=ASSET), snapshot_answer],
        SECTION: [movers_answer, SENT],
    }
    for worker in world.workers:
        worker.plan = lambda job: [*scripts[job.section], _answer(job)]
    in_flight = world.storage.hold("update")
    record, _ = await world.orch.submit(
        ALICE, "alice", "pw", "", [json.dumps(RECORD), json.dumps({"Market Value": "1,000"})]
    )
    task_id = record.task_id
    # The snapshot's prompt is being stored when the movers' prompt is accepted and answered.
    await eventually(lambda: world.storage.calls.count(("update", task_id)) == 1, what="write")
    movers_answer.set()
    writer = world.orch.runs[task_id].writer
    await eventually(lambda: writer.waiting == 2, what="the movers' prompt and answer queued")
    in_flight.set()

    await eventually(lambda: world.updates(task_id) == 2, what="the movers stored")
    stored = world.storage.record(task_id).result_data
    assert (stored[SECTION].status, stored[SECTION].message_id) == (SectionState.COMPLETED, "m1")
    assert (stored[snapshot].status, stored[snapshot].message_id) == (SectionState.RUNNING, "m2")
    snapshot_answer.set()
    assert (await world.finished(task_id)).status == TaskState.COMPLETED
    # The snapshot's prompt; the movers' prompt and answer together; the snapshot's answer.
    assert world.updates(task_id) == 3


async def test_a_message_reported_again_while_its_write_waits_is_written_once(
    world: World,
) -> None:
    answer = asyncio.Event()
    world.scripts = [[SENT, SENT, SENT, answer]]  # as a poll of the message reports it
    in_flight = world.storage.hold("update")
    task_id = await _submit(world)
    await eventually(lambda: world.storage.calls.count(("update", task_id)) == 1, what="write")
    # The three reports handled while the first one's write is held.
    await eventually(lambda: sum(w.handled for w in world.workers) == 3, what="reports")
    in_flight.set()
    await eventually(lambda: world.updates(task_id) == 1, what="the prompt stored")
    answer.set()

    assert (await world.finished(task_id)).status == TaskState.COMPLETED
    assert world.updates(task_id) == 2  # the prompt once, the answer


async def test_a_prompt_whose_write_finds_the_task_taken_over_ends_its_job(world: World) -> None:
    never = asyncio.Event()
    world.scripts = [[SENT, never]]
    in_flight = world.storage.hold("update")
    task_id = await _submit(world)
    await eventually(lambda: world.storage.calls.count(("update", task_id)) == 1, what="write")
    taken = world.storage.record(task_id).model_copy(update={"owner": "r2"})
    world.storage.put_record(taken)  # another replica took the task over meanwhile
    in_flight.set()

    await eventually(lambda: task_id not in world.orch.runs, what="the run ended")
    assert not never.is_set()
    assert world.storage.record(task_id).owner == "r2"
    assert world.updates(task_id) == 0


async def test_a_conversation_alone_or_a_message_reported_again_costs_no_write(
    world: World,
) -> None:
    world.scripts = [[Progress(conv_id="c1", asset_id=ASSET), world.gate, SENT, SENT, SENT]]
    task_id = await _submit(world)
    await eventually(lambda: len(world.jobs) == 1, what="job dispatched")
    assert world.updates(task_id) == 0

    world.gate.set()
    done = await world.finished(task_id)
    assert done.status == TaskState.COMPLETED
    assert world.updates(task_id) == 2  # the prompt once, the answer


# -- a stored message is resumed, not prompted again ----------------------------------------


async def test_a_job_lost_after_its_prompt_resumes_that_message_on_another_worker(
    world: World,
) -> None:
    world.scripts = [[SENT, LOST], [SENT]]
    task_id = await _submit(world)

    done = await world.finished(task_id)

    assert done.status == TaskState.COMPLETED
    (lost_on, fresh), (resumed_on, resumed) = world.jobs
    assert lost_on == world.home(task_id).address
    assert fresh.resume_message_id == ""
    assert resumed_on != lost_on
    assert (resumed.resume_conv_id, resumed.resume_message_id, resumed.resume_asset_id) == (
        "c1",
        "m1",
        ASSET,
    )
    assert done.result_data[SECTION].response == "report of m1"
    assert done.result_data[SECTION].dispatches == 2
    assert world.updates(task_id) == 2  # the prompt once, the answer


async def test_a_job_started_away_from_its_home_stores_its_worker_first(world: World) -> None:
    task_id = "task_20260101000000_aa000005"
    record, version = world.orphan(task_id)
    home = world.home(task_id)
    world.orch.deps.pool.workers[home.address].in_flight = 4  # full
    stored_before_run: list[str] = []
    for worker in world.workers:
        plan = world.plan_of(worker)

        def spy(job: SectionJob, plan: Plan = plan) -> Sequence[Step]:
            stored_before_run.append(world.storage.record(task_id).result_data[SECTION].worker)
            return plan(job)

        worker.plan = spy

    await _take_over(world, record, version)
    await world.finished(task_id)

    [(away, _)] = world.jobs
    assert away != home.address
    assert stored_before_run == [away]
    assert world.updates(task_id) == 4  # the takeover, the placement, the prompt, the answer


async def test_a_job_started_at_its_home_stores_no_placement(world: World) -> None:
    task_id = "task_20260101000000_aa000006"
    record, version = world.orphan(task_id)

    await _take_over(world, record, version)
    await world.finished(task_id)

    [(at, _)] = world.jobs
    assert at == world.home(task_id).address
    assert world.updates(task_id) == 3  # the takeover, the prompt, the answer


async def test_a_taken_over_section_resumes_its_message_on_the_worker_that_sent_it(
    world: World,
) -> None:
    task_id = "task_20260101000000_aa000001"
    sent_by = next(w for w in world.workers if w is not world.home(task_id))
    record, version = world.orphan(
        task_id, conv_id="c1", message_id="m1", conv_asset_id=ASSET, worker=sent_by.address
    )

    await _take_over(world, record, version)
    done = await world.finished(task_id)

    assert done.status == TaskState.COMPLETED
    [(address, job)] = world.jobs
    assert address == sent_by.address  # before the job's home
    assert (job.resume_conv_id, job.resume_message_id, job.resume_asset_id) == ("c1", "m1", ASSET)
    assert done.result_data[SECTION].response == "report of m1"
    assert world.updates(task_id) == 2  # the takeover, then the answer: no prompt write


async def test_a_taken_over_section_resumes_elsewhere_when_its_worker_has_no_room(
    world: World,
) -> None:
    task_id = "task_20260101000000_aa000002"
    sent_by = world.home(task_id)
    world.orch.deps.pool.workers[sent_by.address].in_flight = 4  # full
    record, version = world.orphan(task_id, conv_id="c1", message_id="m1", worker=sent_by.address)

    await _take_over(world, record, version)
    await world.finished(task_id)

    [(address, job)] = world.jobs
    assert address != sent_by.address
    assert job.resume_message_id == "m1"


async def test_a_taken_over_section_without_a_message_starts_afresh_at_its_home(
    world: World,
) -> None:
    task_id = "task_20260101000000_aa000003"
    record, version = world.orphan(task_id, conv_id="c0", conv_asset_id=ASSET)

    await _take_over(world, record, version)
    await world.finished(task_id)

    # Nothing stored to resume; its home is where the dead replica's dispatch went.
    [(address, job)] = world.jobs
    assert address == world.home(task_id).address
    assert (job.resume_conv_id, job.resume_message_id) == ("", "")


async def test_a_message_the_worker_replaced_is_stored_and_traced(world: World) -> None:
    world.scripts = [[Progress(conv_id="c1", message_id="m2", asset_id=ASSET), world.gate]]
    task_id = "task_20260101000000_aa000004"
    record, version = world.orphan(task_id, conv_id="c1", message_id="m1", conv_asset_id=ASSET)

    await _take_over(world, record, version)
    await eventually(lambda: world.updates(task_id) == 2, what="the new message stored")

    stored = world.storage.record(task_id)
    assert stored.result_data[SECTION].message_id == "m2"
    assert [(t.step, t.detail) for t in stored.trace if t.step == "Prompt sent again"] == [
        ("Prompt sent again", f"{SECTION}: message m1 will never be answered; sent as message m2")
    ]
    world.gate.set()
    assert (await world.finished(task_id)).status == TaskState.COMPLETED


async def test_a_retried_section_resumes_the_message_it_had_sent(world: World) -> None:
    timed_out = Outcome(False, conv_id="c1", message_id="m1", error="timed out waiting")
    world.scripts = [[SENT, timed_out], [SENT]]
    task_id = await _submit(world)
    failed = await world.finished(task_id)
    assert failed.status == TaskState.ERROR
    assert failed.result_data[SECTION].message_id == "m1"

    await world.orch.retry(task_id, ALICE)
    done = await world.finished(task_id)

    assert done.status == TaskState.COMPLETED
    (first, fresh), (again, resumed) = world.jobs
    assert (fresh.resume_message_id, resumed.resume_message_id) == ("", "m1")
    assert again == first  # the worker that sent it
    assert done.result_data[SECTION].response == "report of m1"
