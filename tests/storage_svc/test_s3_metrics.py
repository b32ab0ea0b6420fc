"""Every S3 request storage_svc makes is counted and timed by operation and outcome, each
attempt of a retried call on its own (scripted answers, no server)."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prometheus_client import REGISTRY

from common.errors import Conflict, Internal, NotFound
from storage_svc.s3calls import S3Calls
from storage_svc.settings import StorageSettings


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def requests(op: str, outcome: str) -> float:
    labels = {"operation": op, "outcome": outcome}
    return REGISTRY.get_sample_value("wealthai_s3_requests_total", labels) or 0.0


def timed(op: str, outcome: str) -> float:
    labels = {"operation": op, "outcome": outcome}
    return REGISTRY.get_sample_value("wealthai_s3_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
def s3() -> S3Calls:
    return S3Calls(
        StorageSettings(s3_max_attempts=3, s3_backoff_base_s=0.001, s3_backoff_max_s=0.002)
    )


async def test_each_attempt_counts_with_its_outcome(s3: S3Calls) -> None:
    answers: list[Exception | None] = [
        _client_error("SlowDown", 503),
        EndpointConnectionError(endpoint_url="http://s3"),
        None,
    ]

    async def attempt() -> str:
        failure = answers.pop(0)
        if failure is not None:
            raise failure
        return "done"

    op = "PutObject"
    before = {o: requests(op, o) for o in ("transient", "ok")}
    timed_before = timed(op, "transient")
    assert await s3.call(op, attempt) == "done"
    assert requests(op, "transient") == before["transient"] + 2
    assert requests(op, "ok") == before["ok"] + 1
    assert timed(op, "transient") == timed_before + 2


@pytest.mark.parametrize(
    ("failure", "outcome", "raised"),
    [
        (_client_error("NoSuchKey", 404), "not_found", NotFound),
        (_client_error("PreconditionFailed", 412), "conflict", Conflict),
        (_client_error("AccessDenied", 403), "denied", Internal),
        (_client_error("NoSuchBucket", 404), "no_bucket", Exception),
        (_client_error("MalformedXML", 400), "other", Internal),
        (Internal("the attempt judged the answer"), "refused", Internal),
    ],
)
async def test_failures_count_by_kind(
    s3: S3Calls, failure: Exception, outcome: str, raised: type[Exception]
) -> None:
    async def attempt() -> None:
        raise failure

    op = "GetObject"
    before = requests(op, outcome)
    with pytest.raises(raised):
        await s3.call(op, attempt)
    assert requests(op, outcome) == before + 1


async def test_a_request_whose_caller_went_away_counts_as_cancelled(s3: S3Calls) -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.sleep(3600)

    op = "ListObjectsV2"
    before = requests(op, "cancelled")
    call = asyncio.create_task(s3.call(op, attempt))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert requests(op, "cancelled") == before + 1
