"""The orchestrator's metrics as a scrape sees them while a task runs and after it ends: tasks by
state, sections holding a worker slot and waiting for one, submitted and finished counters, the
workers and their slots. A real Orchestrator over in-memory storage and a scripted worker;
figures are read as differences, since the registry is the process's."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import REGISTRY

from common.principals import Principal
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.worker_client import Outcome, Progress, SectionJob
from tests.orchestrator.fakes import (
    FakePeers,
    FakeStorage,
    FakeWorker,
    Step,
    eventually,
    pool_of,
    room,
)

CONFIG = Path(__file__).resolve().parents[2] / "config.json"
ALICE = Principal(id="alice-key", tenant="t")
RECORDS = [
    json.dumps({"Market Value": 1, "XIRR_SI": 2}),
    json.dumps({"top_movers_data": "AAPL +3%"}),
    json.dumps({"total_portfolio_mv": 10, "assets": []}),
]
SLOTS = 2  # fewer than the task's three sections: one waits for a slot


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Gated:
    """A worker's script: every job reports progress, then waits for the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    def plan(self, job: SectionJob) -> Sequence[Step]:
        done = Outcome(success=True, response="r", cost=0.01, conv_id="c", message_id="m")
        return [Progress(conv_id="c"), self.gate, done]


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[Orchestrator, Gated]]:
    gc.collect()  # the replicas of earlier tests no longer count
    worker = FakeWorker("127.0.0.1:7001", reply=room(SLOTS))
    gated = Gated()
    worker.plan = gated.plan
    deps = Deps(
        storage=FakeStorage().as_client(),
        pool=await pool_of(worker),
        config=load_config(CONFIG),
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    settings = OrchestratorSettings(credential_key=new_key())
    orch = Orchestrator(settings, deps, b"d" * 32, "addr-r1", peers=cast(Peers, FakePeers()))
    yield orch, gated
    await orch.stop()


async def test_a_scrape_sees_the_task_run_and_end(
    orchestrator: tuple[Orchestrator, Gated],
) -> None:
    orch, gated = orchestrator
    submitted = value("wealthai_orchestrator_tasks_submitted_total")
    completed = value("wealthai_orchestrator_tasks_finished_total", state="completed")
    assert value("wealthai_orchestrator_workers_ready") >= 1
    assert value("wealthai_orchestrator_worker_slots") >= SLOTS

    record, _ = await orch.submit(ALICE, "alice", "pw", "", RECORDS)
    assert value("wealthai_orchestrator_tasks_submitted_total") == submitted + 1
    await eventually(
        lambda: value("wealthai_orchestrator_sections_in_flight") == SLOTS,
        what="two sections on the worker",
    )
    assert value("wealthai_orchestrator_sections_queued") == 1
    assert value("wealthai_orchestrator_tasks", state="processing") == 1
    assert value("wealthai_orchestrator_tasks", state="pending") == 0

    gated.gate.set()
    await eventually(lambda: record.task_id not in orch.runs, what="the task finished")
    assert value("wealthai_orchestrator_tasks_finished_total", state="completed") == completed + 1
    assert value("wealthai_orchestrator_tasks", state="processing") == 0
    assert value("wealthai_orchestrator_sections_in_flight") == 0
    assert value("wealthai_orchestrator_sections_queued") == 0
    assert value("wealthai_orchestrator_takeovers_total") == 0
    assert value("wealthai_orchestrator_replicas_alive") == 1  # itself
