"""The orchestrator's worker client and a task run against a real section worker and the real
simulator: jobs carry a token, an expired token surfaces as TokenExpired with the ids reached,
and a task whose token expires mid-section renews it and finishes without a second prompt."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from orchestrator import worker_client
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.models import FileRef, SectionResult, TaskState
from orchestrator.pipeline import Deps, TaskRun
from orchestrator.worker_client import (
    Credentials,
    GrpcWorkerClient,
    Outcome,
    Progress,
    SectionJob,
    TokenExpired,
    WorkerFull,
    WorkerLost,
)
from orchestrator.workers import WorkerPool
from section_worker.files import FileClient
from section_worker.servicer import SERVICE_NAME
from simulator.answers import input_digest
from tests.helpers import assert_eventually
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeStorage
from tests.section_worker.conftest import ASSET, CREDENTIALS, PASSWORD, Sim, StartWorker
from tests.section_worker.conftest import file_client as file_client
from tests.section_worker.conftest import sim as sim  # the fixtures
from tests.section_worker.conftest import start_worker as start_worker

CONFIG = Path(__file__).resolve().parents[2] / "config.json"
USER = Credentials(CREDENTIALS.tenant, CREDENTIALS.username, PASSWORD)


@pytest.fixture
async def client(start_worker: StartWorker) -> AsyncIterator[GrpcWorkerClient]:
    worker = await start_worker(poll_max_s=0.05, job_timeout_s=10)
    address = f"127.0.0.1:{worker.host.port}"
    made = GrpcWorkerClient(address)
    yield made
    await made.close()


def _job(token: str, **changes: Any) -> SectionJob:
    values: dict[str, Any] = {
        "job_id": "task_1:s",
        "task_id": "task_1",
        "section": "s",
        "asset_id": ASSET,
        "record_json": json.dumps({"a": 1}),
        "tenant": USER.tenant,
        "username": USER.username,
        "timeout_s": 10,
    }
    return SectionJob(access_token=token, **(values | changes))


async def _outcome(client: GrpcWorkerClient, job: SectionJob) -> Outcome:
    events = [event async for event in client.run(job)]
    assert isinstance(events[-1], Outcome)
    return events[-1]


async def test_an_expired_token_surfaces_with_the_ids_and_the_job_resumes(
    sim: Sim, client: GrpcWorkerClient
) -> None:
    await sim.configure(token_ttl_s=0.4, latency_median_s=1.0)
    token = await client.authenticate(USER)

    with pytest.raises(TokenExpired) as expired:
        await _outcome(client, _job(token.value))
    await sim.configure(token_ttl_s=3600)
    renewed = await client.authenticate(USER, refresh=True)
    outcome = await _outcome(
        client,
        _job(
            renewed.value,
            resume_conv_id=expired.value.conv_id,
            resume_message_id=expired.value.message_id,
        ),
    )

    assert expired.value.conv_id and expired.value.message_id
    assert "401" in expired.value.reason and token.value not in expired.value.reason
    assert renewed.value != token.value and renewed.expires_in > 1000
    assert outcome.success, outcome.error
    assert outcome.message_id == expired.value.message_id
    stats = await sim.stats()
    assert sum(stats["prompts_by_input"].values()) == 1
    assert stats["calls"]["create"] == 1


async def test_a_task_renews_its_token_mid_section_without_sending_a_prompt_twice(
    sim: Sim, client: GrpcWorkerClient
) -> None:
    # The first token dies while the sections are being written; the renewed one outlives them.
    await sim.configure(token_ttl_s=1.0, latency_median_s=1.6)
    pool = WorkerPool([client.address], refresh_s=60, connect=lambda _: client)
    await pool.refresh()
    sealer = Sealer(decode_key(new_key()))
    task_id = "task_20260101000000_00abcdef"
    records = [{"Market Value": 1, "XIRR_SI": 2}, {"top_movers_data": "AAPL +3%"}]
    record = task_record(
        task_id=task_id,
        tenant=USER.tenant,
        username=USER.username,
        password_sealed=sealer.seal(PASSWORD, task_id, USER.tenant, USER.username),
        data=records,
        result_data={
            "portfolio_snapshot": SectionResult(record_index=0, asset_id=ASSET),
            "top_movers": SectionResult(record_index=1, asset_id=ASSET),
        },
    )
    storage = FakeStorage()
    version = storage.put_record(record)
    deps = Deps(
        storage=storage.as_client(),
        pool=pool,
        config=load_config(CONFIG),
        sealer=sealer,
        replica_id="r1",
        auth_wait_s=2,
    )

    await TaskRun(record, version, deps).run()

    stored = storage.record(task_id)
    assert stored.status == TaskState.COMPLETED, stored.message
    assert all(s.dispatches == 2 for s in stored.result_data.values())
    assert stored.password_sealed == ""
    stats = await sim.stats()
    assert stats["calls"]["auth"] == 2  # the task's token, then one renewal for both sections
    assert stats["rejected"]["401"] >= 2
    assert sorted(stats["prompts_by_input"].values()) == [1, 1]


async def test_a_job_carries_its_owner_files_and_output_and_its_result_files_come_back(
    sim: Sim, start_worker: StartWorker, file_client: FileClient
) -> None:
    worker = await start_worker(files=file_client)
    client = GrpcWorkerClient(f"127.0.0.1:{worker.host.port}")

    async def text() -> AsyncIterator[bytes]:
        yield b"AAPL +3%"

    stored = await file_client.write("t/alice", "m.txt", "text/plain", text())
    given = FileRef(**dataclasses.asdict(stored), temporary=True)
    job = _job(
        (await client.authenticate(USER)).value,
        record_json=json.dumps({"top_movers_data": {"file_id": stored.file_id}}),
        owner_id="t/alice",
        files=(given,),
        output="file",
    )
    try:
        outcome = await _outcome(client, job)
    finally:
        await client.close()

    assert outcome.success, outcome.error
    assert outcome.response == ""
    [produced] = outcome.files
    assert isinstance(produced, FileRef)
    assert (produced.name, produced.content_type) == ("task_1_s.md", "text/markdown; charset=utf-8")
    assert produced.key.endswith(produced.file_id) and len(produced.sha256) == 64
    inlined = {"file_id": stored.file_id, "name": "m.txt", "content_type": "text/plain"}
    prompt = json.dumps({"top_movers_data": {**inlined, "content": "AAPL +3%"}})
    assert list((await sim.http.get("/_sim/prompts")).json()) == [input_digest(ASSET, prompt)]


async def test_progress_names_the_conversations_asset_and_a_resume_names_it_back(
    sim: Sim, client: GrpcWorkerClient
) -> None:
    token = await client.authenticate(USER)
    other_asset = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"  # configured, not the job's
    first = [e async for e in client.run(replace(_job(token.value), asset_id=other_asset))]
    done = first[-1]
    assert isinstance(done, Outcome) and done.success

    again = [
        e
        async for e in client.run(
            _job(
                token.value,
                resume_conv_id=done.conv_id,
                resume_message_id=done.message_id,
                resume_asset_id=other_asset,
            )
        )
    ]

    def assets(events: list[Progress | Outcome]) -> set[str]:
        return {e.asset_id for e in events if isinstance(e, Progress) and e.conv_id}

    assert assets(first) == {other_asset}
    assert assets(again) == {other_asset}
    resumed = again[-1]
    assert isinstance(resumed, Outcome)
    assert (resumed.response, resumed.cost, resumed.conv_id, resumed.message_id) == (
        done.response,
        done.cost,
        done.conv_id,
        done.message_id,
    )
    assert (await sim.stats())["calls"]["prompt"] == 1


@pytest.mark.parametrize("between_events", [False, True])
async def test_a_caller_cancelled_mid_job_stops_the_job_on_the_worker(
    sim: Sim, client: GrpcWorkerClient, between_events: bool
) -> None:
    await sim.configure(latency_median_s=5.0, latency_sigma=0.01)
    token = await client.authenticate(USER)
    sent = asyncio.Event()
    storing = asyncio.Event()  # never set: the caller is busy storing the ids it got

    async def consume() -> None:
        async with contextlib.aclosing(client.run(_job(token.value))) as events:
            async for event in events:
                if isinstance(event, Progress) and event.message_id:
                    sent.set()
                    if between_events:
                        await storing.wait()

    consumer = asyncio.create_task(consume())
    await sent.wait()  # cancelled while it waits for the next event, or while it stores
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer

    load = await assert_eventually(
        client.load, lambda load: load.in_flight == 0, timeout=3, what="job stopped"
    )
    assert load.in_flight == 0


# -- one stream for every job sent to a worker ---------------------------------------------------


def _streams_open() -> float:
    """RunSections streams the in-process workers serve now."""
    return (
        REGISTRY.get_sample_value(
            "wealthai_grpc_server_requests_in_flight",
            {"service": SERVICE_NAME, "method": "RunSections"},
        )
        or 0.0
    )


async def test_the_jobs_sent_to_a_worker_share_one_stream(
    sim: Sim, client: GrpcWorkerClient
) -> None:
    await sim.configure(latency_median_s=0.5, latency_sigma=0.01)
    token = await client.authenticate(USER)
    before = _streams_open()

    running = [
        asyncio.create_task(_outcome(client, _job(token.value, job_id=f"task_1:s{n}")))
        for n in range(3)
    ]
    await assert_eventually(client.load, lambda load: load.in_flight == 3, what="3 jobs running")
    assert _streams_open() - before == 1
    outcomes = await asyncio.gather(*running)

    assert all(outcome.success for outcome in outcomes)
    assert len({outcome.message_id for outcome in outcomes}) == 3


async def test_a_lost_worker_loses_every_job_of_its_stream_and_the_next_job_opens_another(
    sim: Sim, start_worker: StartWorker
) -> None:
    worker = await start_worker(poll_max_s=0.05, shutdown_grace_s=0.05)
    port = worker.host.port
    client = GrpcWorkerClient(f"127.0.0.1:{port}")
    token = await client.authenticate(USER)
    await sim.configure(latency_median_s=10)
    running = [
        asyncio.create_task(_outcome(client, _job(token.value, job_id=f"task_1:s{n}")))
        for n in range(2)
    ]
    await assert_eventually(client.load, lambda load: load.in_flight == 2, what="jobs running")

    await worker.host.stop()

    for lost in await asyncio.gather(*running, return_exceptions=True):
        assert isinstance(lost, WorkerLost), lost
    await sim.configure(latency_median_s=0.01)
    await start_worker(port=port, poll_max_s=0.05)
    outcome = await _outcome(client, _job(token.value, job_id="task_1:next"))
    assert outcome.success, outcome.error
    await client.close()


async def test_a_job_past_its_deadline_is_lost_and_cancelled_on_the_worker(
    sim: Sim, client: GrpcWorkerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_client, "_JOB_CALL_MARGIN_S", -0.7)  # a deadline 0.3 s away
    await sim.configure(latency_median_s=5)
    token = await client.authenticate(USER)

    with pytest.raises(WorkerLost, match="DEADLINE_EXCEEDED"):
        await _outcome(client, _job(token.value, timeout_s=1))

    await assert_eventually(client.load, lambda load: load.in_flight == 0, what="job cancelled")


async def test_a_full_worker_refuses_a_job_before_it_starts(
    sim: Sim, start_worker: StartWorker
) -> None:
    worker = await start_worker(max_concurrent_jobs=1, poll_max_s=0.05)
    client = GrpcWorkerClient(f"127.0.0.1:{worker.host.port}")
    token = await client.authenticate(USER)
    await sim.configure(latency_median_s=10)
    first = asyncio.create_task(_outcome(client, _job(token.value)))
    await assert_eventually(client.load, lambda load: load.in_flight == 1, what="first job")

    with pytest.raises(WorkerFull):
        await _outcome(client, _job(token.value, job_id="task_1:other"))

    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await assert_eventually(client.load, lambda load: load.in_flight == 0, what="slot freed")
    await client.close()


async def test_closing_the_client_loses_its_jobs_and_stops_them_on_the_worker(
    sim: Sim, start_worker: StartWorker
) -> None:
    worker = await start_worker(poll_max_s=0.05)
    address = f"127.0.0.1:{worker.host.port}"
    client, watcher = GrpcWorkerClient(address), GrpcWorkerClient(address)
    token = await client.authenticate(USER)
    await sim.configure(latency_median_s=10)
    running = asyncio.create_task(_outcome(client, _job(token.value)))
    await assert_eventually(watcher.load, lambda load: load.in_flight == 1, what="job running")

    await client.close()

    with pytest.raises(WorkerLost, match="closed"):
        await running
    await assert_eventually(watcher.load, lambda load: load.in_flight == 0, what="job stopped")
    await watcher.close()
