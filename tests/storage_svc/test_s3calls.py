"""The retry loop and the S3-error mapping of S3Calls, with scripted failures (no server)."""

from __future__ import annotations

import io
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
from storage_svc.s3calls import (
    EXPECT_CONTINUE_MIN_BYTES,
    Failure,
    S3Calls,
    _send_small_body_at_once,
    classify,
    resolve_endpoints_by_bucket,
)
from storage_svc.settings import StorageSettings
from tests.storage_svc.conftest import record_puts


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


# -- endpoint resolution without the object key ------------------------------------------------


def _endpoint(client: Any, bucket: str, key: str) -> Any:
    """The endpoint ``client``'s resolver gives an object call on ``bucket``/``key``: the key is
    among the rule set's parameters only if the resolver still has it."""
    resolver = client._ruleset_resolver
    given = {
        "Bucket": bucket,
        "Key": key,
        "Region": "us-east-1",
        "ForcePathStyle": True,
        "Endpoint": client.meta.endpoint_url,
    }
    params = {name: value for name, value in given.items() if name in resolver._param_definitions}
    return resolver._provider.resolve_endpoint(**params)


async def test_the_store_client_resolves_endpoints_without_the_key_and_still_works(
    store: Any,
) -> None:
    client = store.s3.client
    assert "Key" not in client._ruleset_resolver._param_definitions
    # Calls on many keys resolve the one endpoint of the bucket, and still reach their objects.
    for key in ("a", "tasks/x.json", "deep/er/key with space"):
        await client.put_object(Bucket=store.s3.bucket, Key=key, Body=b"{}")
        got = await client.get_object(Bucket=store.s3.bucket, Key=key)
        assert await got["Body"].read() == b"{}"


async def test_an_endpoint_is_the_same_with_and_without_the_key(aws_session: Any) -> None:
    async with (
        aws_session.client(
            "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"
        ) as keyed,
        aws_session.client(
            "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"
        ) as unkeyed,
    ):
        assert resolve_endpoints_by_bucket(unkeyed) is True
        assert resolve_endpoints_by_bucket(unkeyed) is False  # done already
        assert "Key" in keyed._ruleset_resolver._param_definitions
        for key in ("a", "tasks/t.json", "x" * 900):
            with_key = _endpoint(keyed, "bucket-1", key)
            without = _endpoint(unkeyed, "bucket-1", key)
            assert with_key.url == without.url
            assert with_key.properties == without.properties


async def test_rules_that_read_the_key_keep_it(
    aws_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Loader:
        def load_service_model(self, service: str, kind: str) -> dict[str, Any]:
            return {"rules": [{"conditions": [{"fn": "isSet", "argv": [{"ref": "Key"}]}]}]}

    monkeypatch.setattr("storage_svc.s3calls.create_loader", Loader)
    async with aws_session.client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1"
    ) as client:
        assert resolve_endpoints_by_bucket(client) is False
        assert "Key" in client._ruleset_resolver._param_definitions


def test_a_client_without_a_rule_set_resolver_is_left_alone() -> None:
    assert resolve_endpoints_by_bucket(object()) is False


class _Unsized:
    """A stream whose length cannot be told before it is read."""

    def read(self, n: int = -1) -> bytes:
        return b""


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        (b"", False),
        (b"{}", False),
        (io.BytesIO(b"x" * (EXPECT_CONTINUE_MIN_BYTES - 1)), False),
        (io.BytesIO(b"x" * EXPECT_CONTINUE_MIN_BYTES), True),
        (_Unsized(), True),
    ],
    ids=["empty", "small", "just-under", "at-the-limit", "unknown-length"],
)
def test_only_a_body_known_to_be_small_goes_without_expect(body: Any, kept: bool) -> None:
    params = {"headers": {"Expect": "100-continue", "Content-Type": "x"}, "body": body}
    _send_small_body_at_once(params)
    assert ("Expect" in params["headers"]) is kept
    assert params["headers"]["Content-Type"] == "x"


def test_a_request_without_expect_is_left_alone() -> None:
    params: dict[str, Any] = {"headers": {}, "body": b"{}"}
    _send_small_body_at_once(params)
    assert params == {"headers": {}, "body": b"{}"}


async def test_the_client_sends_a_small_body_without_expect(store: Any) -> None:
    client = store.s3.client
    sent: list[tuple[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        expect = request.headers.get("Expect")
        sent.append((request.url.rpartition("/")[2], expect.decode() if expect else None))

    client.meta.events.register("before-send.s3.PutObject", record)
    try:
        await client.put_object(Bucket=store.s3.bucket, Key="small", Body=b"{}")
        big = b"x" * EXPECT_CONTINUE_MIN_BYTES
        await client.put_object(Bucket=store.s3.bucket, Key="big", Body=big)
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", record)

    assert sent == [("small", None), ("big", "100-continue")]


async def test_small_bodies_go_past_the_client_and_large_ones_through_it(store: Any) -> None:
    s3, client = store.s3, store.s3.client
    direct = record_puts(s3)
    through_client: list[str] = []
    client.meta.events.register(
        "before-parameter-build.s3.PutObject",
        lambda params, **_: through_client.append(params["Key"]),
    )
    small = b'{"a": 1}'
    large = b'"' + b"x" * EXPECT_CONTINUE_MIN_BYTES + b'"'

    await s3.put_empty("owners/marker")
    version = await s3.put_json("doc.json", small, what="a document", if_none_match=True)
    await s3.put_json("big.json", large, what="a document", if_none_match=True)

    assert (direct, through_client) == (["owners/marker", "doc.json"], ["big.json"])
    assert await s3.read("doc.json") == (small, version)
    heads = [
        await client.head_object(Bucket=s3.bucket, Key=k) for k in ("owners/marker", "doc.json")
    ]
    assert [head["ServerSideEncryption"] for head in heads] == ["AES256", "AES256"]
    assert (heads[0]["ContentLength"], heads[1]["ContentType"]) == (0, "application/json")
    with pytest.raises(Conflict, match="a document already exists"):
        await s3.put_json("doc.json", small, what="a document", if_none_match=True)
    with pytest.raises(Conflict, match="changed by another writer"):
        await s3.put_json("doc.json", small, what="a document", if_match='"0"')
