"""The Celery peer's decisions without Celery: its task document, its input checks, the status
a Celery state stands for, the sealing of passwords, and one section against the stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from pydantic import SecretStr

from bench.chaos import SEED
from bench.peers import documents
from bench.peers.celery_peer import PlatformCalls, Runner
from bench.peers.documents import Job
from bench.peers.front import status_of, submission
from bench.peers.settings import PeerSettings, new_seal_key, seal, unseal
from bench.standin import StandIn, bound_port, start
from common.errors import InvalidInput
from common.platform_config import load_config
from scripts.devstack import ROOT
from simulator.answers import answer_for

CONFIG = load_config(ROOT / "config.json")
ASSETS = {
    "portfolio_snapshot": "c7b75809-063a-4f9c-80a8-496e88ed4894",
    "top_movers": "a9fdeb96-cdfa-4a48-9467-bf97a06f8738",
    "model_and_rebalancing": "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
}


def settings(**changes: object) -> PeerSettings:
    return PeerSettings(api_key=SecretStr("key"), seal_key=SecretStr(new_seal_key()), **changes)


def test_each_record_becomes_the_job_of_its_section() -> None:
    jobs = documents.jobs_of(list(SEED), CONFIG)
    assert [(j.section, j.asset_id) for j in jobs] == list(ASSETS.items())
    # The prompt is the record as the platform's workers send it (the benchmark matches on it).
    assert [j.prompt for j in jobs] == [json.dumps(record) for record in SEED]


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([], "1 to 20 records"),
        ([SEED[1]] * 21, "1 to 20 records"),
        ([{"x": 1}], "matches no section"),
        ([SEED[1], SEED[1]], "both feed section"),
        ([{"table_file": {"file_id": "f"}}], "not a conversation"),
    ],
)
def test_records_the_peer_cannot_run_are_refused(
    records: list[dict[str, object]], words: str
) -> None:
    with pytest.raises(InvalidInput, match=words):
        documents.jobs_of(records, CONFIG)


def test_a_document_goes_from_submitted_to_completed() -> None:
    task_id = documents.new_task_id()
    assert documents.TASK_ID.match(task_id)
    assert documents.key_of(task_id) == f"tasks/{task_id}.json"
    jobs = documents.jobs_of(list(SEED), CONFIG)
    doc = documents.submitted(task_id, "ann@example.com", "wealth", list(SEED), jobs)
    assert (doc["status"], doc["progress"], doc["completed_at"]) == ("pending", 0, None)
    assert documents.jobs_in(doc) == jobs
    assert documents.result_view(doc)["elapsed_seconds"] is None

    doc = documents.started(doc, auth_ms=12.5)
    assert (doc["status"], doc["progress"]) == ("processing", 20)
    assert [s["step"] for s in doc["trace"]] == [
        "Submit",
        "1. Authentication",
        "2. Detect Sections",
    ]

    results = {
        job.section: {
            "status": "completed",
            "response": f"answer {n}",
            "cost": 0.1 * (n + 1),
            "conv_id": f"c{n}",
            "message_id": f"m{n}",
            "error": "",
            "duration_ms": 5.0,
        }
        for n, job in enumerate(jobs)
    }
    doc = documents.finished(doc, results)
    assert (doc["status"], doc["progress"], doc["cost"]) == ("completed", 100, 0.6)
    assert doc["conv_id"] == "c0, c1, c2" and doc["message_id"] == "m0, m1, m2"
    assert doc["result_data"]["top_movers"] == {
        "status": "completed",
        "response": "answer 1",
        "cost": 0.2,
        "conv_id": "c1",
        "message_id": "m1",
        "error": "",
    }
    assert doc["trace"][-1]["step"] == "4. Aggregate"
    view = documents.result_view(doc)
    created, completed = (datetime.fromisoformat(doc[k]) for k in ("created_at", "completed_at"))
    assert view["elapsed_seconds"] == round((completed - created).total_seconds(), 3)
    assert view["data"] == doc["result_data"] and view["status"] == "completed"


def test_a_failed_section_makes_the_task_an_error_and_keeps_the_rest() -> None:
    jobs = documents.jobs_of(list(SEED), CONFIG)
    doc = documents.started(documents.submitted("t", "u", "w", list(SEED), jobs), 1.0)
    ok = {"status": "completed", "response": "r", "cost": 0.1, "conv_id": "c", "message_id": "m"}
    results = {job.section: ok | {"error": "", "duration_ms": 1.0} for job in jobs}
    results["top_movers"] = ok | {"status": "error", "error": "poll answered 500", "duration_ms": 1}
    doc = documents.finished(doc, results)
    assert doc["status"] == "error"
    assert doc["message"] == "Sections failed: top_movers"
    assert doc["result_data"]["portfolio_snapshot"]["response"] == "r"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"password": "p", "data": []}, "username"),
        ({"username": "", "password": "p", "data": []}, "username"),
        ({"username": "u" * 257, "password": "p", "data": []}, "username"),
        ({"username": "u", "data": []}, "password"),
        ({"username": "u", "password": "", "data": []}, "password"),
        ({"username": "u", "password": "p"}, "data"),
        ({"username": "u", "password": "p", "data": [1]}, "data"),
    ],
)
def test_a_submission_names_what_is_wrong(body: object, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        submission(body)


def test_a_good_submission_is_read() -> None:
    body = {"username": "u", "password": "p", "data": [{"a": 1}]}
    assert submission(body) == ("u", "p", [{"a": 1}])


@pytest.mark.parametrize(
    ("state", "result", "status"),
    [
        ("PENDING", None, "pending"),
        ("RECEIVED", None, "pending"),
        ("STARTED", None, "processing"),
        ("RETRY", None, "processing"),
        ("SUCCESS", {"status": "completed"}, "completed"),
        ("SUCCESS", {"status": "error"}, "error"),
        ("SUCCESS", "not what the task returns", "error"),
        ("FAILURE", None, "error"),
        ("REVOKED", None, "error"),
    ],
)
def test_status_of_each_celery_state(state: str, result: object, status: str) -> None:
    assert status_of(state, result) == status


def test_a_sealed_password_opens_with_its_key_only() -> None:
    mine = settings()
    sealed = seal(mine, "s3cret-Pa55")
    assert "s3cret" not in sealed
    assert unseal(mine, sealed) == "s3cret-Pa55"
    with pytest.raises(ValueError, match="does not open"):
        unseal(settings(), sealed)


@pytest.fixture
async def standin() -> AsyncIterator[tuple[StandIn, str]]:
    state = StandIn(seed=3)
    runner = await start(state, 0)
    yield state, f"http://127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()


async def test_a_section_creates_sends_and_polls_until_answered(
    standin: tuple[StandIn, str],
) -> None:
    state, url = standin
    state.knobs = state.knobs.patched({"latency_median_s": 0, "latency_sigma": 0})
    runner = Runner(settings(platform_url=url, poll_s=0.01, concurrency=2))
    runner.open()
    record = json.dumps(SEED[1])
    token = await asyncio.to_thread(runner.platform.token, "wealth", "ann", "pw")
    again = await asyncio.to_thread(runner.platform.token, "wealth", "ann", "pw")
    assert again == token and state.calls["auth"] == 1  # one login, one token

    out = await asyncio.to_thread(
        runner.section, token, Job("top_movers", ASSETS["top_movers"], record)
    )

    response, cost = answer_for(ASSETS["top_movers"], record, 0.004, 0.24)
    assert out["status"] == "completed" and out["error"] == ""
    assert (out["response"], out["cost"]) == (response, cost)
    assert len(out["conv_id"]) == len(out["message_id"]) == 24
    assert dict(state.calls) == {"auth": 1, "create": 1, "prompt": 1, "poll": 1}
    assert state.timeline()[out["message_id"]]["polls"] == 1
    runner.close()


async def test_a_section_gives_up_after_its_timeout(standin: tuple[StandIn, str]) -> None:
    state, url = standin
    state.knobs = state.knobs.patched({"latency_median_s": 30, "latency_sigma": 0})
    runner = Runner(settings(platform_url=url, poll_s=0.02, section_timeout_s=0.1, concurrency=1))
    runner.open()
    token = await asyncio.to_thread(runner.platform.token, "wealth", "ann", "pw")
    out = await asyncio.to_thread(runner.section, token, Job("s", ASSETS["top_movers"], "{}"))
    assert out["status"] == "error" and "no answer within 0.1 s" in out["error"]
    assert state.calls["poll"] >= 1 and out["message_id"]
    runner.close()


async def test_a_refused_call_ends_the_section_with_its_error(
    standin: tuple[StandIn, str],
) -> None:
    _, url = standin
    calls = PlatformCalls(settings(platform_url=url), pool=1)
    runner = Runner(settings(platform_url=url, poll_s=0.01, concurrency=1))
    runner.open()
    out = await asyncio.to_thread(runner.section, "forged", Job("s", ASSETS["top_movers"], "{}"))
    assert out["status"] == "error"
    assert out["error"] == "SectionFailed: create conversation answered 401"
    with pytest.raises(Exception, match="authentication answered 401"):
        await asyncio.to_thread(calls.token, "wealth", "ann", "")
    calls.close()
    runner.close()
