"""Continuing a conversation: what :func:`orchestrator.continuation.resolve` accepts and
refuses, and a chat task through the orchestrator — owned like any task, its job sent into the
analysed section's conversation on the asset that answered there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from common.errors import InvalidInput, NotFound, WrongState
from common.principals import Principal
from orchestrator.config import load_config
from orchestrator.continuation import resolve
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.detection import detect
from orchestrator.models import Continued, SectionResult, SectionState, TaskRecord
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.worker_client import Outcome, Progress, SectionJob
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import (
    FakePeers,
    FakeStorage,
    FakeWorker,
    Step,
    eventually,
    expired,
    pool_of,
    room,
)

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config.json")
EARLIER = "task_20261128000000_0123abcd"
ASSET_B = CONFIG.sections["document_section"].chain[1]
ANALYSIS = {"kind": "analyze_section", "section_name": "Risks", "content": "One.\n\nTwo."}


def analysed(status: SectionState = SectionState.COMPLETED, **section: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "status": status,
        "conv_id": "conv-1",
        "model_used": ASSET_B if status == SectionState.COMPLETED else "",
        "record_index": 0,
        "asset_id": ASSET_B,
        **section,
    }
    return task_record(
        task_id=EARLIER,
        data=[dict(ANALYSIS)],
        result_data={"document_section": SectionResult(**fields)},
    )


def chat(**extra: Any) -> dict[str, Any]:
    return {"kind": "chat", "message": "Why?", "context": {"feedback": "2 items"}, **extra}


async def run(records: list[dict[str, Any]], earlier: TaskRecord | None = None) -> dict[int, Any]:
    async def load(task_id: str) -> TaskRecord:
        if earlier is None or task_id != earlier.task_id:
            raise NotFound(f"task {task_id} not found")
        return earlier

    return await resolve(records, detect(records, CONFIG), CONFIG, load)


async def test_a_chat_continues_the_analysed_conversation_and_carries_its_section_name() -> None:
    record = chat(continue_task_id=EARLIER)
    found = await run([record], analysed())
    assert found == {
        0: Continued(
            task_id=EARLIER, section="document_section", conv_id="conv-1", asset_id=ASSET_B
        )
    }
    # The marker is gone from the prompt; the section's name joined the context.
    assert record == {
        "kind": "chat",
        "message": "Why?",
        "context": {"feedback": "2 items", "section_name": "Risks"},
    }


async def test_a_record_of_another_section_continues_nothing() -> None:
    record = {"top_movers_data": "AAPL +3%"}
    assert await run([record]) == {}
    with pytest.raises(InvalidInput, match="section 'top_movers' continues no conversation"):
        await run([{"top_movers_data": "x", "continue_task_id": EARLIER}])


@pytest.mark.parametrize("marker", [None, "", 7])
async def test_a_chat_needs_the_earlier_task(marker: object) -> None:
    record = chat() if marker is None else chat(continue_task_id=marker)
    with pytest.raises(InvalidInput, match=r"data\[0\].continue_task_id: required"):
        await run([record], analysed())


async def test_an_unknown_or_hidden_task_is_not_found() -> None:
    with pytest.raises(NotFound):
        await run([chat(continue_task_id="task_20261128000000_ffffffff")], analysed())


async def test_a_task_without_the_section_cannot_be_continued() -> None:
    other = task_record(task_id=EARLIER, result_data={})
    with pytest.raises(WrongState, match="has no section 'document_section'"):
        await run([chat(continue_task_id=EARLIER)], other)


@pytest.mark.parametrize(
    ("earlier", "state"),
    [
        (analysed(SectionState.RUNNING), "running"),
        (analysed(SectionState.ERROR), "error"),
        (analysed(conv_id=""), "completed"),
    ],
)
async def test_an_unfinished_or_failed_analysis_cannot_be_continued(
    earlier: TaskRecord, state: str
) -> None:
    with pytest.raises(WrongState, match=f"is {state}; only a completed section's conversation"):
        await run([chat(continue_task_id=EARLIER)], earlier)


async def test_the_context_must_be_an_object_to_carry_fields_into() -> None:
    with pytest.raises(InvalidInput, match=r"data\[0\].context: must be a JSON object"):
        await run([chat(context="text", continue_task_id=EARLIER)], analysed())


# -- through the orchestrator ---------------------------------------------------------------

ANN = Principal(id="ann", tenant="acme")
BOB = Principal(id="bob", tenant="acme")


@pytest.fixture
async def orch() -> AsyncIterator[tuple[Orchestrator, FakeWorker]]:
    worker = FakeWorker("127.0.0.1:7001", reply=room(8))

    def plan(job: SectionJob) -> Sequence[Step]:
        conv = job.resume_conv_id or "conv-new"
        return [
            Progress(conv_id=conv),
            Outcome(
                success=True,
                response=f"answer of {job.section}",
                cost=0.01,
                conv_id=conv,
                message_id=f"m-{job.section}",
                asset_id=job.assets[0] if job.assets else job.asset_id,
            ),
        ]

    worker.plan = plan
    deps = Deps(
        storage=FakeStorage().as_client(),
        pool=await pool_of(worker),
        config=CONFIG,
        sealer=Sealer(decode_key(new_key())),
        replica_id="r1",
        auth_wait_s=0.5,
    )
    settings = OrchestratorSettings(credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0)
    made = Orchestrator(settings, deps, b"d" * 32, "addr", peers=cast(Peers, FakePeers()))
    yield made, worker
    await made.stop()


async def _finished(service: Orchestrator, task_id: str) -> TaskRecord:
    await eventually(lambda: task_id not in service.runs, what=f"{task_id} finished")
    return await service.get(task_id, ANN)


async def test_a_chat_task_runs_in_the_analysed_conversation_on_its_asset(
    orch: tuple[Orchestrator, FakeWorker],
) -> None:
    service, worker = orch
    first, _ = await service.submit(ANN, "u", "pw", "", [json.dumps(ANALYSIS)])
    done = await _finished(service, first.task_id)
    section = done.result_data["document_section"]
    assert section.conv_id == "conv-new" and section.model_used

    reply, _ = await service.submit(
        ANN, "u", "pw", "", [json.dumps(chat(continue_task_id=first.task_id))]
    )
    continued = reply.result_data["document_chat"].continues
    assert continued is not None and continued.conv_id == "conv-new"
    assert reply.data == [{**chat(), "context": {"feedback": "2 items", "section_name": "Risks"}}]
    finished = await _finished(service, reply.task_id)
    assert finished.result_data["document_chat"].response == "answer of document_chat"

    job = worker.runs[-1]
    assert (job.resume_conv_id, job.resume_message_id) == ("conv-new", "")
    assert job.assets == (section.model_used,) and job.asset_id == section.model_used
    assert "continue_task_id" not in job.record_json
    # The analysis itself started a conversation of its own, on its chain.
    assert worker.runs[0].resume_conv_id == ""
    assert len(worker.runs[0].assets) == 4


async def test_another_owners_analysis_cannot_be_continued(
    orch: tuple[Orchestrator, FakeWorker],
) -> None:
    service, _ = orch
    first, _ = await service.submit(ANN, "u", "pw", "", [json.dumps(ANALYSIS)])
    await _finished(service, first.task_id)
    with pytest.raises(NotFound, match=f"task {first.task_id} not found"):
        await service.submit(BOB, "u", "pw", "", [json.dumps(chat(continue_task_id=first.task_id))])


async def test_a_malformed_earlier_task_id_is_bad_input(
    orch: tuple[Orchestrator, FakeWorker],
) -> None:
    service, _ = orch
    with pytest.raises(InvalidInput):
        await service.submit(ANN, "u", "pw", "", [json.dumps(chat(continue_task_id="nope"))])


async def test_a_chat_whose_token_expired_resumes_in_the_same_conversation(
    orch: tuple[Orchestrator, FakeWorker],
) -> None:
    service, worker = orch
    first, _ = await service.submit(ANN, "u", "pw", "", [json.dumps(ANALYSIS)])
    await _finished(service, first.task_id)
    answering = worker.plan
    assert answering is not None

    def expire_first_chat(job: SectionJob) -> Sequence[Step]:
        chats = [j for j in worker.runs if j.section == "document_chat"]
        if len(chats) == 1:
            return [expired()]  # rejected before the worker reported any id
        return answering(job)

    worker.plan = expire_first_chat
    reply, _ = await service.submit(
        ANN, "u", "pw", "", [json.dumps(chat(continue_task_id=first.task_id))]
    )
    finished = await _finished(service, reply.task_id)
    assert finished.result_data["document_chat"].status == SectionState.COMPLETED
    again = [j for j in worker.runs if j.section == "document_chat"]
    assert [j.resume_conv_id for j in again] == ["conv-new", "conv-new"]
    assert again[1].assets == again[0].assets
