"""The retry loop and the S3-error mapping of S3Calls, with scripted failures (no server)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from common.errors import Conflict, Internal, NotFound, Unavailable
from storage_svc.s3calls import Failure, S3Calls, classify
from storage_svc.settings import StorageSettings


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


class Script:
    """An S3 request that fails with the given exceptions, then answers ``done``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


@pytest.fixture
def s3() -> S3Calls:
    return S3Calls(
        StorageSettings(s3_max_attempts=3, s3_backoff_base_s=0.001, s3_backoff_max_s=0.002)
    )


@pytest.mark.parametrize(
    "failure",
    [
        _client_error("SlowDown", 503),
        _client_error("Throttling", 400),
        _client_error("RequestLimitExceeded", 400),
        _client_error("InternalError", 500),
        _client_error("ServiceUnavailable", 503),
        EndpointConnectionError(endpoint_url="http://s3"),
        ReadTimeoutError(endpoint_url="http://s3"),
    ],
)
async def test_transient_failures_are_retried_until_success(
    s3: S3Calls, failure: Exception
) -> None:
    request = Script(failure, failure)
    assert await s3.call("PutObject", request) == "done"
    assert request.calls == 3


async def test_retries_are_bounded_then_unavailable(s3: S3Calls) -> None:
    request = Script(*[_client_error("SlowDown", 503, "Please reduce your request rate.")] * 5)
    with pytest.raises(Unavailable, match="S3 unavailable: PutObject failed: SlowDown") as caught:
        await s3.call("PutObject", request)
    assert request.calls == 3
    assert "reduce your request rate" in caught.value.message


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (_client_error("NoSuchKey", 404), NotFound, "gone"),
        (_client_error("404", 404), NotFound, "gone"),
        (_client_error("PreconditionFailed", 412), Conflict, "raced"),
        (_client_error("ConditionalRequestConflict", 409), Conflict, "raced"),
        (_client_error("NoSuchBucket", 404), Unavailable, "bucket .* does not exist"),
        (_client_error("AccessDenied", 403), Internal, "refused access"),
        (_client_error("InvalidAccessKeyId", 403), Internal, "refused access"),
        (_client_error("MalformedXML", 400), Internal, "PutObject failed"),
        (NoCredentialsError(), Internal, "refused access"),
        (Internal("kept as raised"), Internal, "kept as raised"),
    ],
)
async def test_permanent_failures_are_mapped_without_retrying(
    s3: S3Calls, failure: Exception, error: type[Exception], message: str
) -> None:
    request = Script(failure)
    with pytest.raises(error, match=message):
        await s3.call("PutObject", request, not_found="gone", conflict="raced")
    assert request.calls == 1


async def test_access_denied_is_logged_clearly_without_secrets(
    s3: S3Calls, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    with caplog.at_level(logging.ERROR), pytest.raises(Internal) as caught:
        await s3.call("GetObject", Script(_client_error("AccessDenied", 403, "Access Denied")))
    assert "AccessDenied" in caplog.text
    assert "IAM policy" in caplog.text
    assert "s3cr3t-value" not in caplog.text + caught.value.message


def test_classification_of_status_only_answers() -> None:
    failures: dict[str, Any] = {
        "500": classify(_client_error("", 500)),
        "429": classify(_client_error("", 429)),
        "403": classify(_client_error("", 403)),
        "404": classify(_client_error("", 404)),
        "412": classify(_client_error("", 412)),
        "400": classify(_client_error("", 400)),
    }
    assert failures == {
        "500": Failure.TRANSIENT,
        "429": Failure.TRANSIENT,
        "403": Failure.DENIED,
        "404": Failure.NOT_FOUND,
        "412": Failure.CONFLICT,
        "400": Failure.OTHER,
    }
