"""Job runs in plain async Python against the simulator: outcomes, timeouts, admission."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.errors import InvalidInput, Overloaded, Unavailable
from common.logging import section_var, task_id_var
from section_worker.jobs import Event, JobRunner, Progress, SectionJob, SectionResult, Stage
from section_worker.orphans import Orphans
from section_worker.platform_client import PlatformClient
from simulator.state import answer_for
from tests.helpers import assert_eventually
from tests.section_worker.conftest import (
    ASSET,
    CREDENTIALS,
    PASSWORD,
    MakeClient,
    Sim,
    worker_settings,
)

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


def _runner(make_client: MakeClient, orphans: Orphans | None = None, **overrides: Any) -> JobRunner:
    client = make_client(**overrides)
    return JobRunner(client, client._settings, orphans=orphans)


class HeldPrompts:
    """A loopback proxy to the simulator that holds the answer to a prompt — accepted by the
    platform — until ``release`` is set. The worker reaches the platform at ``url``."""

    def __init__(self, sim: Sim) -> None:
        self._target = sim.url
        self.sent = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> HeldPrompts:
        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self._runner.cleanup()
        await self._client.close()

    async def _forward(self, request: web.Request) -> web.Response:
        headers = {
            k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")
        }
        async with self._client.request(
            request.method,
            self._target + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as answer:
            status, body, kind = answer.status, await answer.read(), answer.content_type
        if request.path.endswith("/addmessage/stream"):
            self.sent.set()
            await self.release.wait()
        return web.Response(status=status, body=body, content_type=kind)


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


# -- never paying twice for a prompt --------------------------------------------------------

TOP_MOVERS_ASSET = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"


async def _prompted(sim: Sim, runner: JobRunner, token: str, **changes: Any) -> SectionResult:
    """The result of a job run to its end (``changes`` to the default job)."""
    result = (await _events(runner, _job(token, **changes)))[-1]
    assert isinstance(result, SectionResult)
    return result


def _stages(events: list[Event]) -> list[Stage]:
    return [event.stage for event in events if isinstance(event, Progress)]


async def test_progress_names_the_asset_the_conversation_is_on(
    make_client: MakeClient, token: str
) -> None:
    events = await _events(_runner(make_client), _job(token))

    reached = [e for e in events if isinstance(e, Progress) and e.conv_id]
    assert reached and {e.asset_id for e in reached} == {ASSET}


async def test_a_resumed_job_polls_its_message_on_the_asset_it_was_sent_to(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)
    # The conversation is on another configured asset than the job's own.
    first = await _prompted(sim, runner, token, asset_id=TOP_MOVERS_ASSET)
    before = await sim.stats()

    events = await _events(
        runner,
        _job(
            token,
            resume_conv_id=first.conv_id,
            resume_message_id=first.message_id,
            resume_asset_id=TOP_MOVERS_ASSET,
        ),
    )

    result = events[-1]
    assert isinstance(result, SectionResult) and result.success, result
    assert (result.response, result.cost) == (first.response, first.cost)
    sent = [e for e in events if isinstance(e, Progress) and e.stage is Stage.PROMPT_SENT]
    assert [(e.message_id, e.asset_id) for e in sent] == [(first.message_id, TOP_MOVERS_ASSET)]
    after = await sim.stats()
    assert after["calls"]["create"] == before["calls"]["create"]
    assert after["calls"]["prompt"] == before["calls"]["prompt"]


async def test_a_resume_on_an_asset_the_configuration_does_not_name_is_refused(
    make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)
    with pytest.raises(InvalidInput, match="not one the configuration names"):
        await _events(runner, _job(token, resume_conv_id="c" * 24, resume_asset_id="elsewhere"))
    assert runner.load().in_flight == 0


async def test_a_resumed_message_that_failed_is_prompted_again_once_in_its_conversation(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)
    await sim.configure(fail_assets=[ASSET])
    failed = await _prompted(sim, runner, token)
    assert not failed.success and "FAILED" in failed.error
    await sim.configure(fail_assets=[])

    events = await _events(
        runner, _job(token, resume_conv_id=failed.conv_id, resume_message_id=failed.message_id)
    )

    result = events[-1]
    assert isinstance(result, SectionResult) and result.success, result
    assert result.conv_id == failed.conv_id and result.message_id != failed.message_id
    assert Stage.CONVERSATION_CREATED not in _stages(events)
    sent = [
        e.message_id for e in events if isinstance(e, Progress) and e.stage is Stage.PROMPT_SENT
    ]
    assert sent == [failed.message_id, result.message_id]
    stats = await sim.stats()
    assert (stats["calls"]["create"], stats["calls"]["prompt"]) == (1, 2)


async def test_a_resumed_message_the_platform_does_not_know_is_prompted_again_anew(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client)
    unknown = "0" * 24

    events = await _events(runner, _job(token, resume_conv_id=unknown, resume_message_id=unknown))

    result = events[-1]
    assert isinstance(result, SectionResult) and result.success, result
    assert unknown not in (result.conv_id, result.message_id)
    assert _stages(events)[1:] == [  # the resumed message, then a new conversation and prompt
        Stage.PROMPT_SENT,
        Stage.CONVERSATION_CREATED,
        Stage.PROMPT_SENT,
    ] + [Stage.POLLING] * (len(_stages(events)) - 4)
    assert (await sim.stats())["calls"]["prompt"] == 1


async def test_a_message_the_job_sent_itself_that_fails_is_not_sent_again(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(fail_assets=[ASSET])

    result = await _prompted(sim, _runner(make_client), token)

    assert not result.success
    assert (await sim.stats())["calls"]["prompt"] == 1


async def _cut_off_after_the_prompt(runner: JobRunner, job: SectionJob) -> Progress:
    """Runs ``job`` until the platform accepted its prompt, then goes away (the caller died)."""
    events = runner.run(job)
    while (event := await anext(events)) and not (
        isinstance(event, Progress) and event.stage is Stage.PROMPT_SENT
    ):
        pass
    await events.aclose()
    assert isinstance(event, Progress)
    return event


async def test_a_job_cut_off_after_its_prompt_resumes_it_when_dispatched_here_again(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=0.3)
    orphans = Orphans()
    runner = _runner(make_client, orphans)
    sent = await _cut_off_after_the_prompt(runner, _job(token))
    assert len(orphans) == 1

    events = await _events(runner, _job(token))  # no ids: the orchestrator never stored them

    result = events[-1]
    assert isinstance(result, SectionResult) and result.success, result
    assert (result.conv_id, result.message_id) == (sent.conv_id, sent.message_id)
    assert Stage.CONVERSATION_CREATED not in _stages(events)
    assert (await sim.stats())["calls"]["prompt"] == 1
    assert len(orphans) == 1  # taken, and kept again when this run ended


async def test_an_orphan_is_resumed_by_its_own_job_only(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    await sim.configure(latency_median_s=0.3)
    orphans = Orphans()
    runner = _runner(make_client, orphans)
    await _cut_off_after_the_prompt(runner, _job(token))

    other = await _prompted(sim, runner, token, job_id="task_1:other")

    assert other.success
    assert (await sim.stats())["calls"]["prompt"] == 2
    assert len(orphans) == 2  # its own, still there; and the other job's


async def test_a_job_whose_result_was_delivered_resumes_it_when_dispatched_again(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    runner = _runner(make_client, Orphans())
    first = await _prompted(sim, runner, token)

    # Its orchestrator died before storing the result: the job comes back with no ids.
    again = await _prompted(sim, runner, token)

    assert again.success
    assert (again.message_id, again.response, again.cost) == (
        first.message_id,
        first.response,
        first.cost,
    )
    assert (await sim.stats())["calls"]["prompt"] == 1


async def test_a_send_in_flight_when_the_job_is_cut_off_still_yields_its_message(
    sim: Sim, token: str
) -> None:
    orphans = Orphans()
    async with contextlib.AsyncExitStack() as stack:
        platform = await stack.enter_async_context(HeldPrompts(sim))
        settings = worker_settings(sim, {"platform_url": platform.url})
        client = await stack.enter_async_context(PlatformClient(settings))
        runner = JobRunner(client, settings, orphans=orphans)
        consumer = asyncio.create_task(_events(runner, _job(token)))
        await platform.sent.wait()  # the platform has the prompt; its answer is on the way
        consumer.cancel()
        await asyncio.sleep(0.05)
        assert not consumer.done()  # the cut-off job waits for the message id
        platform.release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        assert len(orphans) == 1

        events = await _events(runner, _job(token))

    result = events[-1]
    assert isinstance(result, SectionResult) and result.success, result
    assert (await sim.stats())["calls"]["prompt"] == 1


async def test_a_timeout_while_sending_still_reports_the_message_sent(sim: Sim, token: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        platform = await stack.enter_async_context(HeldPrompts(sim))
        settings = worker_settings(sim, {"platform_url": platform.url})
        client = await stack.enter_async_context(PlatformClient(settings))
        runner = JobRunner(client, settings)
        running = asyncio.create_task(_events(runner, _job(token, timeout_s=0.3)))
        await platform.sent.wait()
        await asyncio.sleep(0.5)  # past the job's timeout
        platform.release.set()
        result = (await running)[-1]

    assert isinstance(result, SectionResult) and not result.success
    assert result.error == f"section timed out after 0.3s while sending the prompt to asset {ASSET}"
    assert result.message_id  # the orchestrator keeps it, a retry resumes it
    poll = await sim.http.get(
        f"/magicplatform/v1/genai/conversation/response/{result.conv_id}/{result.message_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert poll.status_code == 200
