"""The orchestrator with sections of every job kind, over in-memory storage and scripted
workers: the job carries its kind and options, a task that calls no platform needs no
credentials and skips authentication, progress counts show in the section's status, and a
structured result is kept with the section."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from common.errors import InvalidInput, WrongState
from common.principals import Principal, Role
from orchestrator import transitions
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.models import SectionResult, TaskRecord, TaskState
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.servicer import result_message, status_message
from orchestrator.settings import OrchestratorSettings
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
ADMIN = Principal(id="ops", tenant="", role=Role.ADMIN)
CONFIG = Path(__file__).resolve().parents[2] / "config.json"
PROFILE = {"file": {"rows": 3}, "columns": []}


@dataclass
class World:
    orch: Orchestrator
    storage: FakeStorage
    worker: FakeWorker
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def plan(self, job: SectionJob) -> Sequence[Step]:
        if job.kind == "transform_table":
            return [
                Progress(done=0, total=4),
                Progress(done=3, total=4),
                self.gate,
                Outcome(success=True, cost=0.5, result_json=json.dumps({"rows": 7})),
            ]
        if job.kind == "profile_table":
            return [Progress(done=40, total=100), Outcome(True, result_json=json.dumps(PROFILE))]
        return [Outcome(success=True, response="report", cost=0.01)]

    async def finished(self, task_id: str) -> TaskRecord:
        await eventually(lambda: task_id not in self.orch.runs, what=f"{task_id} finished")
        return await self.orch.get(task_id, ADMIN)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    storage = FakeStorage()
    worker = FakeWorker("127.0.0.1:7001", reply=room(8))
    settings = OrchestratorSettings(credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0)
    deps = Deps(
        storage=storage.as_client(),
        pool=await pool_of(worker),
        config=load_config(CONFIG),
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    orch = Orchestrator(settings, deps, b"d" * 32, "addr-r1", peers=cast(Peers, FakePeers()))
    made = World(orch=orch, storage=storage, worker=worker)
    worker.plan = made.plan
    yield made
    await orch.stop()


def table_record(world: World, **more: str) -> str:
    table = world.storage.files.add(ALICE.id, "t.csv", "text/csv", temporary=True)
    return json.dumps({"table_file": {"file_id": table.file_id}, **more})


async def test_a_profile_needs_no_credentials_and_skips_authentication(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "", "", "", [table_record(world)])
    assert record.section_detected == "data_profile" and record.password_sealed == ""
    done = await world.finished(record.task_id)
    assert done.status == TaskState.COMPLETED, done.message
    assert world.worker.authentications == []
    (job,) = world.worker.runs
    assert (job.kind, job.access_token, job.asset_id, job.assets) == ("profile_table", "", "", ())
    assert json.loads(job.options_json)["top_k"] == 10  # the section's options, as configured
    section = done.result_data["data_profile"]
    assert section.result == PROFILE
    assert json.loads(result_message(done).data["data_profile"].result_json) == PROFILE
    (auth,) = [entry for entry in done.trace if entry.step == "1. Authentication"]
    assert "not needed" in auth.detail


async def test_a_task_that_calls_the_platform_still_needs_credentials(world: World) -> None:
    transform = table_record(world, instruction="add a column")
    for username, password in [("", ""), ("ann", ""), ("", "pw")]:
        with pytest.raises(InvalidInput, match=r"username|password"):
            await world.orch.submit(ALICE, username, password, "", [transform])
    movers = json.dumps({"top_movers_data": "AAPL +3%"})
    with pytest.raises(InvalidInput, match="password"):
        await world.orch.submit(ALICE, "ann", "", "", [table_record(world), movers])


async def test_progress_counts_show_in_the_sections_status(world: World) -> None:
    transform = table_record(world, instruction="add a column")
    record, _ = await world.orch.submit(ALICE, "ann", "pw", "", [transform])

    async def progress() -> str:
        status = status_message(await world.orch.get(record.task_id, ALICE))
        return status.sections[0].progress

    await eventually(
        lambda: (
            world.orch.runs[record.task_id].record.result_data["table_transform"].progress
            == "chunks 3/4"
        ),
        what="chunks 3/4",
    )
    assert await progress() == "chunks 3/4"
    (job,) = world.worker.runs
    assert job.kind == "transform_table" and len(world.worker.authentications) == 1
    world.gate.set()
    done = await world.finished(record.task_id)
    assert done.status == TaskState.COMPLETED
    assert done.result_data["table_transform"].result == {"rows": 7}
    assert done.cost == 0.5


def test_section_progress_shows_only_counts_that_change() -> None:
    record = task_record(
        result_data={"table_transform": SectionResult(record_index=0, asset_id="")}
    )
    assert not transitions.section_progress(record, "table_transform", "transform_table", 0, 0)
    assert transitions.section_progress(record, "table_transform", "transform_table", 1, 4)
    assert not transitions.section_progress(record, "table_transform", "transform_table", 1, 4)
    assert record.result_data["table_transform"].progress == "chunks 1/4"


@pytest.mark.parametrize(
    ("result_json", "kept"),
    [("", None), ('{"a": 1}', {"a": 1}), ("[1]", {"value": [1]}), ("{", {"unreadable": "{"})],
)
def test_a_structured_result_is_kept_as_an_object(result_json: str, kept: object) -> None:
    record = task_record(result_data={"data_profile": SectionResult(record_index=0, asset_id="")})
    outcome = Outcome(success=True, result_json=result_json)
    transitions.finish_section(record, "data_profile", outcome, dispatches=1, started=0.0)
    assert record.result_data["data_profile"].result == kept


def test_a_task_without_a_login_can_be_retried_and_one_whose_login_is_gone_cannot() -> None:
    def failed(username: str) -> TaskRecord:
        section = SectionResult(record_index=0, asset_id="", status="error", error="boom")
        return task_record(
            username=username,
            password_sealed="",
            status=TaskState.ERROR,
            completed_at="2026-11-28T00:00:00.000000",
            result_data={"data_profile": section},
        )

    assert transitions.retry(failed(""), "r1") == ["data_profile"]
    with pytest.raises(WrongState, match="can no longer be retried"):
        transitions.retry(failed("ann"), "r1")
