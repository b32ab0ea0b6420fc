"""Job runs in plain async Python against the simulator: outcomes, timeouts, admission."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from common.errors import InvalidInput, Overloaded, Unavailable
from common.logging import section_var, task_id_var
from section_worker.jobs import Event, JobRunner, Progress, SectionJob, SectionResult, Stage
from simulator.state import answer_for
from tests.helpers import assert_eventually
from tests.section_worker.conftest import ASSET, CREDENTIALS, PASSWORD, MakeClient, Sim

RECORD = json.dumps({"top_movers_data": "AAPL +3.2%"})


def _job(token: str, **changes: Any) -> SectionJob:
    values: dict[str, Any] = {
        "job_id": "task_1:top_movers",
        "task_id": "task_1",
        "section": "top_movers",
        "asset_id": ASSET,
        "record_json": RECORD,
        "tenant": CREDENTIALS.tenant,
        "username": CREDENTIALS.username,
    }
    values.update(changes)
    return SectionJob(access_token=token, **values)


def _runner(make_client: MakeClient, **overrides: Any) -> JobRunner:
    client = make_client(**overrides)
    return JobRunner(client, client._settings)


def _in_flight(runner: JobRunner) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return runner.load().in_flight

    return probe


async def _events(runner: JobRunner, job: SectionJob) -> list[Event]:
    async with contextlib.aclosing(runner.run(job)) as events:
        return [event async for event in events]


async def test_a_job_yields_progress_then_one_result(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)

    events = await _events(runner, _job(token))

    *progress, result = events
    assert all(isinstance(event, Progress) for event in progress)
    assert [p.stage for p in progress[:3]] == [
        Stage.ACCEPTED,
        Stage.CONVERSATION_CREATED,
        Stage.PROMPT_SENT,
    ]
    assert isinstance(result, SectionResult)
    assert result.success, result.error
    assert (result.response, result.cost) == answer_for(ASSET, RECORD, 0.004, 0.24)
    assert result.conv_id == progress[2].conv_id
    assert result.message_id == progress[2].message_id
    stats = await sim.stats()
    assert result.platform_calls == sim.total_calls(stats) - stats["calls"]["auth"]
    assert stats["calls"]["auth"] == 1  # the test's own token call: the job makes none
    assert runner.load().in_flight == 0


async def test_the_job_timeout_becomes_a_failed_result(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=10)
    runner = _runner(make_client)

    events = await _events(runner, _job(token, timeout_s=1.5))  # room to send on a busy machine

    result = events[-1]
    assert isinstance(result, SectionResult)
    assert not result.success
    assert result.error == (
        f"section timed out after 1.5s while waiting for the answer of asset {ASSET}"
    )
    assert result.message_id
    assert 1.5 <= result.duration_s < 4


async def test_a_platform_outage_becomes_a_failed_result(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(error_rate=1.0)
    runner = _runner(make_client, max_retries=1)

    events = await _events(runner, _job(token))

    result = events[-1]
    assert isinstance(result, SectionResult)
    assert not result.success
    # One retry on a transient error (WORKER_CHAIN_RETRIES), then the chain of one is exhausted.
    assert result.error == (
        f"every asset of the chain failed ({ASSET} failed: "
        "create conversation: the platform answered 503 (gave up after 2 attempts))"
    )
    assert result.platform_calls == 2  # two create attempts; the job brings its token
    assert [(a.asset_id, a.outcome) for a in result.attempts] == [(ASSET, "failed")]


async def test_beyond_capacity_a_job_is_refused_at_once(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=10)
    runner = _runner(make_client, max_concurrent_jobs=1)
    first = runner.run(_job(token))
    assert (await anext(first)) == Progress(Stage.ACCEPTED)

    with pytest.raises(Overloaded, match="maximum of 1 jobs"):
        await anext(runner.run(_job(token, job_id="task_1:other")))
    assert runner.load().in_flight == 1

    await first.aclose()
    assert runner.load().in_flight == 0


async def test_draining_refuses_new_jobs_and_waits_for_running_ones(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=0.2)
    runner = _runner(make_client)
    running = asyncio.create_task(_events(runner, _job(token)))
    await assert_eventually(_in_flight(runner), lambda n: n == 1, what="job running")

    drained = await runner.drain(5)

    assert drained
    assert running.done()
    result = running.result()[-1]
    assert isinstance(result, SectionResult) and result.success
    assert not runner.load().accepting
    with pytest.raises(Unavailable, match="draining"):
        await anext(runner.run(_job(token)))


async def test_cancelling_the_consumer_cancels_the_job(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=10)
    runner = _runner(make_client)
    consumer = asyncio.create_task(_events(runner, _job(token)))
    await assert_eventually(_in_flight(runner), lambda n: n == 1, what="job running")

    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer

    assert runner.load().in_flight == 0


async def test_job_log_lines_carry_task_and_section_and_no_secret(
    sim: Sim, make_client: MakeClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str, str]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), task_id_var.get(), section_var.get()))

    spy = Spy()
    logging.getLogger("section_worker").addHandler(spy)
    caplog.set_level(logging.DEBUG)
    try:
        runner = _runner(make_client)
        await _events(runner, _job(token))
    finally:
        logging.getLogger("section_worker").removeHandler(spy)

    job_lines = [line for line in seen if line[0].startswith("job task_1:top_movers")]
    assert len(job_lines) == 2
    assert all((task, section) == ("task_1", "top_movers") for _, task, section in job_lines)
    assert PASSWORD not in caplog.text
    assert token not in caplog.text


async def test_a_rejected_token_before_the_prompt_ends_the_job_as_token_expired(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.reset()  # the platform forgets every token it issued
    runner = _runner(make_client)

    result = (await _events(runner, _job(token)))[-1]

    assert isinstance(result, SectionResult)
    assert result.token_expired and not result.success
    assert result.error == (
        "create conversation: the platform rejected the access token (401) "
        f"while creating the conversation on asset {ASSET}"
    )
    assert (result.conv_id, result.message_id) == ("", "")
    assert (await sim.stats())["calls"].get("auth", 0) == 0  # the worker cannot authenticate


async def test_a_token_expiring_mid_job_resumes_with_a_new_one_without_a_second_prompt(
    sim: Sim, make_client: MakeClient
) -> None:
    await sim.configure(token_ttl_s=0.3, latency_median_s=1.0)
    runner = _runner(make_client)

    first = (await _events(runner, _job(await sim.token())))[-1]

    assert isinstance(first, SectionResult)
    assert first.token_expired and not first.success
    assert first.conv_id and first.message_id
    assert first.error.startswith("poll: the platform rejected the access token (401)")
    await sim.configure(token_ttl_s=3600)
    resumed = _job(
        await sim.token(), resume_conv_id=first.conv_id, resume_message_id=first.message_id
    )
    events = await _events(runner, resumed)

    result = events[-1]
    assert isinstance(result, SectionResult)
    assert result.success, result.error
    assert (result.conv_id, result.message_id) == (first.conv_id, first.message_id)
    assert (result.response, result.cost) == answer_for(ASSET, RECORD, 0.004, 0.24)
    assert Stage.CONVERSATION_CREATED not in [e.stage for e in events if isinstance(e, Progress)]
    stats = await sim.stats()
    assert sum(stats["prompts_by_input"].values()) == 1
    assert stats["calls"]["create"] == 1


def test_a_job_shows_no_token_in_its_repr() -> None:
    job = _job("secret-token-value")
    assert "secret-token-value" not in repr(job)
    assert not hasattr(job, "password") and not hasattr(job, "credentials")


async def test_a_job_for_an_asset_the_configuration_does_not_name_is_refused(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)
    with pytest.raises(InvalidInput, match="not one the configuration names"):
        await _events(runner, _job(token, asset_id="not-a-configured-asset"))
    assert runner.load().in_flight == 0
    assert (await sim.stats())["calls"]["create"] == 0


async def test_a_jobs_timeout_is_clamped_to_the_workers_maximum(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client, max_job_timeout_s=0.3)
    await sim.configure(latency_median_s=5.0, latency_sigma=0.01)
    started = time.monotonic()

    *_, result = await _events(runner, _job(token, timeout_s=3600.0))

    assert isinstance(result, SectionResult) and not result.success
    assert "timed out after 0.3s" in result.error
    assert time.monotonic() - started < 3
