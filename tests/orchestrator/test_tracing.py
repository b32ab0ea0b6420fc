"""One trace per task in the orchestrator: the submission's trace is stored with the task, and
every run of it — on the replica that took the submission, or on one that takes the task over —
continues that trace. Real orchestrators over in-memory storage and a scripted worker, spans
kept in memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest
from opentelemetry import trace

from common import tracing
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
from tests.spans import Spans, collecting_spans

CONFIG = Path(__file__).resolve().parents[2] / "config.json"
ALICE = Principal(id="alice-key", tenant="t")
RECORDS = [json.dumps({"top_movers_data": "AAPL +3%"})]
SUBMISSION = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Gated:
    def __init__(self) -> None:
        self.gate = asyncio.Event()

    def plan(self, job: SectionJob) -> Sequence[Step]:
        done = Outcome(success=True, response="r", cost=0.01, conv_id="c", message_id="m")
        return [Progress(conv_id="c"), self.gate, done]


@pytest.fixture
def spans() -> Iterator[Spans]:
    with collecting_spans() as collected:
        yield collected


@pytest.fixture
async def replicas(spans: Spans) -> AsyncIterator[tuple[Orchestrator, Orchestrator, Gated]]:
    storage, gated, key = FakeStorage(), Gated(), new_key()
    made = []
    for name in ("r1", "r2"):
        worker = FakeWorker(f"127.0.0.1:700{name[-1]}", reply=room(4))
        worker.plan = gated.plan
        deps = Deps(
            storage=storage.as_client(),
            pool=await pool_of(worker),
            config=load_config(CONFIG),
            sealer=Sealer(decode_key(key)),
            replica_id=name,
            auth_wait_s=0.5,
        )
        settings = OrchestratorSettings(credential_key=key)
        peers = cast(Peers, FakePeers())
        made.append(Orchestrator(settings, deps, b"d" * 32, f"addr-{name}", peers=peers))
    yield made[0], made[1], gated
    gated.gate.set()
    for orch in made:
        await orch.stop()


def _trace_id(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


async def test_the_run_and_a_takeover_continue_the_submissions_trace(
    replicas: tuple[Orchestrator, Orchestrator, Gated], spans: Spans
) -> None:
    first, second, gated = replicas
    with tracing.continued(SUBMISSION, "SubmitTask", "-"):
        record, _ = await first.submit(ALICE, "alice", "pw", "", RECORDS)
        submitted_in = trace.get_current_span().get_span_context()
    # The stored task names the span it was submitted in.
    stored, version = await first.deps.storage.get(record.task_id)
    assert stored.traceparent.split("-")[1:3] == [
        trace.format_trace_id(submitted_in.trace_id),
        trace.format_span_id(submitted_in.span_id),
    ]

    # Another replica takes the task over (as after the first one's death): its run continues
    # the same trace, as a child of the submission.
    assert await second.takeover.take_over(stored, version) == 1
    gated.gate.set()
    await eventually(
        lambda: record.task_id not in first.runs and record.task_id not in second.runs,
        what="both runs ended",
    )
    runs = [s for s in spans.named("task run") if s.context is not None]
    assert len(runs) == 2  # the first replica's run, then the second's
    for run in runs:
        assert run.context is not None
        assert run.context.trace_id == _trace_id(SUBMISSION)
        assert run.parent is not None and run.parent.span_id == submitted_in.span_id
        assert run.attributes is not None
        assert run.attributes["wealthai.task_id"] == record.task_id


async def test_with_tracing_off_nothing_is_stored(
    replicas: tuple[Orchestrator, Orchestrator, Gated],
) -> None:
    first, _, _ = replicas
    tracing.use(None)
    record, _ = await first.submit(ALICE, "alice", "pw", "", RECORDS)
    stored, _ = await first.deps.storage.get(record.task_id)
    assert stored.traceparent == ""
