"""The worker over real gRPC: streaming, failures, capacity, cancellation, credentials."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from common.errors import UpstreamError, from_rpc_error
from simulator.state import answer_for
from tests.helpers import assert_eventually
from tests.section_worker.conftest import (
    ASSET,
    FAILING_ASSET,
    PASSWORD,
    Sim,
    StartWorker,
    Worker,
)
from wealthai.worker.v1 import worker_pb2

RECORD = json.dumps({"total_portfolio_mv": 1000000, "customer_risk_profile": "moderate"})


def _credentials(password: str = PASSWORD) -> Any:
    return worker_pb2.Credentials(tenant="acme", username="alice@example.com", password=password)


def _job(token: str, asset_id: str = ASSET, **changes: Any) -> Any:
    values: dict[str, Any] = {
        "job_id": "task_9:model_and_rebalancing",
        "task_id": "task_9",
        "section": "model_and_rebalancing",
        "asset_id": asset_id,
        "record_json": RECORD,
        "tenant": "acme",
        "username": "alice@example.com",
        "access_token": token,
    }
    values.update(changes)
    return worker_pb2.SectionJob(**values)


async def _load(worker: Worker) -> Any:
    return await worker.stub.GetLoad(worker_pb2.GetLoadRequest())


async def test_a_job_streams_progress_then_a_result_matching_the_platform(
    sim: Sim, worker: Worker, token: str
) -> None:
    events = [event async for event in worker.stub.RunSection(_job(token))]

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    stages = [event.progress.stage for event in events[:3]]
    assert stages == [
        worker_pb2.STAGE_ACCEPTED,
        worker_pb2.STAGE_CONVERSATION_CREATED,
        worker_pb2.STAGE_PROMPT_SENT,
    ]
    result = events[-1].result
    assert result.success, result.error
    assert (result.response, round(result.cost, 4)) == answer_for(ASSET, RECORD, 0.004, 0.24)
    assert result.conv_id == events[2].progress.conv_id and len(result.conv_id) == 24
    assert result.message_id == events[2].progress.message_id and len(result.message_id) == 24
    stats = await sim.stats()
    assert result.platform_calls == sim.total_calls(stats) - 1  # not the test's token call
    assert stats["cost_served"] == round(result.cost, 4)
    assert result.duration_s > 0


async def test_the_load_reports_what_jobs_spent_today_and_the_breakers_they_used(
    sim: Sim, worker: Worker, token: str
) -> None:
    before = await _load(worker)
    assert before.spend_day == datetime.now(UTC).strftime("%Y-%m-%d")
    assert dict(before.spend_today_usd) == {} and dict(before.breakers) == {}

    events = [
        event async for event in worker.stub.RunSection(_job(token, principal_tenant="payer"))
    ]

    result = events[-1].result
    assert result.success, result.error
    load = await _load(worker)
    assert dict(load.spend_today_usd) == {"payer": pytest.approx(result.cost, abs=1e-6)}
    assert dict(load.breakers) == {ASSET: "closed"}


async def test_a_job_cut_off_after_its_prompt_resumes_it_over_the_wire(
    sim: Sim, worker: Worker, token: str
) -> None:
    await sim.configure(latency_median_s=0.5)
    call = worker.stub.RunSection(_job(token))
    while (event := await call.read()).progress.stage != worker_pb2.STAGE_PROMPT_SENT:
        pass
    sent = event.progress
    call.cancel()  # the orchestrator died: its stream is gone
    await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 0, what="job cut off"
    )

    events = [event async for event in worker.stub.RunSection(_job(token))]

    assert sent.asset_id == ASSET
    result = events[-1].result
    assert result.success, result.error
    assert (result.conv_id, result.message_id) == (sent.conv_id, sent.message_id)
    stages = [e.progress.stage for e in events[:-1]]
    assert worker_pb2.STAGE_CONVERSATION_CREATED not in stages
    stats = await sim.stats()
    assert (stats["calls"]["create"], stats["calls"]["prompt"]) == (1, 1)


async def test_a_failing_asset_gives_a_failed_result(worker: Worker, token: str) -> None:
    events = [event async for event in worker.stub.RunSection(_job(token, FAILING_ASSET))]

    result = events[-1].result
    assert not result.success
    assert f"the platform answered FAILED for asset {FAILING_ASSET}" in result.error
    assert [(a.asset_id, a.outcome) for a in result.attempts] == [(FAILING_ASSET, "failed")]
    assert result.response == ""
    assert result.conv_id and result.message_id


async def test_beyond_capacity_a_job_is_refused_and_cancelling_frees_the_slot(
    sim: Sim, start_worker: StartWorker, token: str
) -> None:
    worker = await start_worker(max_concurrent_jobs=1)
    await sim.configure(latency_median_s=10)
    first = worker.stub.RunSection(_job(token))
    assert (await first.read()).progress.stage == worker_pb2.STAGE_ACCEPTED

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [event async for event in worker.stub.RunSection(_job(token, job_id="task_9:other"))]
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maximum of 1 jobs" in str(refused.value.details())
    assert (await _load(worker)).in_flight == 1

    first.cancel()
    load = await assert_eventually(
        lambda: _load(worker), lambda load: load.in_flight == 0, what="slot freed"
    )
    assert load.capacity == 1 and load.accepting

    await sim.configure(latency_median_s=0.01)
    # Another job: the cancelled one, dispatched here again, would resume its 10-s message.
    events = [event async for event in worker.stub.RunSection(_job(token, job_id="task_9:next"))]
    assert events[-1].result.success


async def test_a_draining_worker_refuses_jobs_as_unavailable(worker: Worker, token: str) -> None:
    assert await worker.runner.drain(0.1)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [event async for event in worker.stub.RunSection(_job(token))]

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not (await _load(worker)).accepting


@pytest.mark.parametrize(
    ("changes", "details"),
    [
        ({"asset_id": ""}, "asset_id is required"),
        ({"access_token": ""}, "access_token is required"),
        ({"resume_message_id": "m" * 24}, "resume_message_id needs resume_conv_id"),
        ({"resume_asset_id": ASSET}, "resume_asset_id needs resume_conv_id"),
    ],
)
async def test_an_incomplete_job_is_invalid(
    worker: Worker, changes: dict[str, str], details: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [event async for event in worker.stub.RunSection(_job("a-token", **changes))]

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == details
    assert (await _load(worker)).in_flight == 0


def test_no_section_job_field_can_carry_a_password() -> None:
    def names(descriptor: Any, seen: frozenset[str] = frozenset()) -> set[str]:
        found: set[str] = set()
        for field in descriptor.fields:
            found.add(field.name)
            if field.message_type and field.message_type.full_name not in seen:
                found |= names(field.message_type, seen | {descriptor.full_name})
        return found

    fields = names(worker_pb2.SectionJob.DESCRIPTOR)
    assert "access_token" in fields
    assert not {"password", "credentials"} & fields


async def test_the_token_authenticate_returns_runs_a_job_and_a_refresh_replaces_it(
    sim: Sim, worker: Worker
) -> None:
    answer = await worker.stub.Authenticate(
        worker_pb2.AuthenticateRequest(credentials=_credentials())
    )
    await sim.reset()  # the platform forgets the token the worker holds

    expired = [event async for event in worker.stub.RunSection(_job(answer.access_token))]
    renewed = await worker.stub.Authenticate(
        worker_pb2.AuthenticateRequest(credentials=_credentials(), refresh=True)
    )
    events = [event async for event in worker.stub.RunSection(_job(renewed.access_token))]

    assert expired[-1].result.token_expired and not expired[-1].result.success
    assert "401" in expired[-1].result.error
    assert answer.access_token not in expired[-1].result.error
    assert renewed.access_token != answer.access_token
    assert events[-1].result.success and not events[-1].result.token_expired
    assert (await sim.stats())["calls"]["auth"] == 1  # since the reset: the refresh only


async def test_authenticate_reports_the_token_and_how_long_it_lasts(worker: Worker) -> None:
    answer = await worker.stub.Authenticate(
        worker_pb2.AuthenticateRequest(credentials=_credentials())
    )

    assert 1800 <= answer.expires_in <= 3600
    assert answer.access_token


async def test_authenticate_with_a_bad_password_does_not_echo_it(worker: Worker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.stub.Authenticate(
            worker_pb2.AuthenticateRequest(credentials=_credentials("guess-Pa55word"))
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = str(refused.value.details())
    assert "refused the credentials" in details
    assert "guess-Pa55word" not in details
    assert "guess-Pa55word" not in str(refused.value.debug_error_string())


async def test_authenticate_refused_by_the_platform_is_an_upstream_error_not_an_outage(
    sim: Sim, start_worker: StartWorker
) -> None:
    # A platform that answers 404 to the token call will answer it again: nothing to retry.
    worker = await start_worker(platform_url=f"{sim.url}/moved")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.stub.Authenticate(worker_pb2.AuthenticateRequest(credentials=_credentials()))

    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    assert refused.value.details() == "authenticate: the platform answered 404"
    assert type(from_rpc_error(refused.value, "worker")) is UpstreamError
