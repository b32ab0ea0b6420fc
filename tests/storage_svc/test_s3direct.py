"""PutObject past botocore: the bucket's address, the signature, and S3's answers as botocore's
errors. Signatures are checked by SeaweedFS (moto accepts any); the rest on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiohttp import web
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError

from common.errors import Conflict
from storage_svc.s3calls import Failure, S3Calls, classify, describe
from storage_svc.s3direct import DirectPuts, _client_connections, _refusal
from storage_svc.settings import StorageSettings
from storage_svc.store import TaskStore
from tests.helpers import free_port
from tests.storage_svc.conftest import record_puts


class _Credentials:
    """A credential source as botocore's session hands out (frozen on demand)."""

    def __init__(self, token: str | None = None) -> None:
        self.frozen = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token)

    async def get_frozen_credentials(self) -> Any:
        return self.frozen.get_frozen_credentials()


_CREDENTIALS = _Credentials()


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[web.Request], list[web.Response]]]:
    """A loopback server recording every request; answers what the test queues (else 200)."""
    seen: list[web.Request] = []
    answers: list[web.Response] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return answers.pop(0) if answers else web.Response(headers={"ETag": '"v1"'})

    app = web.Application()
    app.router.add_route("*", "/{key:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/bucket/", seen, answers
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _puts(base: str, credentials: Any = _CREDENTIALS) -> AsyncIterator[DirectPuts]:
    timeout = aiohttp.ClientTimeout(sock_connect=1, sock_read=1)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield DirectPuts(base, "eu-west-1", credentials, http)


async def test_a_put_is_signed_with_every_header_and_the_session_token(recorder: Any) -> None:
    base, seen, _ = recorder
    async with _puts(base, _Credentials(token="session-token")) as puts:
        version = await puts.put(
            "tasks/a b+c.json", b"{}", {"Content-Type": "application/json", "If-Match": '"v0"'}
        )

    assert version == '"v1"'
    (request,) = seen
    assert (request.method, request.raw_path) == ("PUT", "/bucket/tasks/a%20b%2Bc.json")
    auth = request.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/s3/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"content-type", "host", "if-match", "x-amz-date", "x-amz-security-token"} <= set(signed)
    assert request.headers["X-Amz-Security-Token"] == "session-token"
    assert "wJalrXUtnFEMI" not in str(dict(request.headers))


@pytest.mark.parametrize(
    ("status", "body", "code", "message", "failure"),
    [
        (
            412,
            b"<?xml version='1.0'?><Error><Code>PreconditionFailed</Code>"
            b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
            b"</Error>",
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            Failure.CONFLICT,
        ),
        (412, b"", "412", "", Failure.CONFLICT),
        (
            503,
            b"<Error><Code>SlowDown</Code><Message>Reduce &amp; retry</Message></Error>",
            "SlowDown",
            "Reduce & retry",
            Failure.TRANSIENT,
        ),
        (
            404,
            b"<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>",
            "NoSuchBucket",
            "gone",
            Failure.NO_BUCKET,
        ),
        (
            403,
            b"<Error><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error>",
            "SignatureDoesNotMatch",
            "m",
            Failure.DENIED,
        ),
        (400, b"not xml at all", "400", "", Failure.OTHER),
    ],
)
async def test_a_refusal_is_botocores_error_with_s3s_code(
    recorder: Any, status: int, body: bytes, code: str, message: str, failure: Failure
) -> None:
    base, _, answers = recorder
    answers.append(web.Response(status=status, body=body))
    async with _puts(base) as puts:
        with pytest.raises(ClientError) as caught:
            await puts.put("k", b"{}", {})

    assert caught.value.response["Error"] == {"Code": code, "Message": message}
    assert classify(caught.value) is failure
    assert describe(caught.value) == (f"{code}: {message}" if message else code)


async def test_a_redirect_is_a_refusal_not_followed(recorder: Any) -> None:
    base, seen, answers = recorder
    body = b"<Error><Code>PermanentRedirect</Code><Message>use eu-west-2</Message></Error>"
    answers.append(web.Response(status=301, body=body, headers={"Location": base + "elsewhere"}))
    async with _puts(base) as puts:
        with pytest.raises(ClientError, match="PermanentRedirect") as caught:
            await puts.put("k", b"{}", {})

    assert len(seen) == 1
    assert classify(caught.value) is Failure.OTHER


def test_a_refusal_reads_only_the_code_and_the_message() -> None:
    error = _refusal(403, b"<Error><Code>AccessDenied</Code><RequestId>r</RequestId></Error>")
    assert error.response == {
        "Error": {"Code": "AccessDenied", "Message": ""},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }


async def test_a_connection_refused_is_a_transient_failure() -> None:
    async with _puts(f"http://127.0.0.1:{free_port()}/bucket/") as puts:
        with pytest.raises(HTTPClientError) as caught:
            await puts.put("k", b"{}", {})
    assert classify(caught.value) is Failure.TRANSIENT


async def test_an_answer_that_does_not_come_in_time_is_a_transient_failure() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _puts(f"http://127.0.0.1:{port}/bucket/") as puts:
            with pytest.raises((HTTPClientError, TimeoutError)) as caught:
                await puts.put("k", b"{}", {})
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert classify(caught.value) is Failure.TRANSIENT


async def test_without_credentials_nothing_is_sent(recorder: Any) -> None:
    base, seen, _ = recorder
    async with _puts(base, credentials=None) as puts:
        with pytest.raises(NoCredentialsError) as caught:
            await puts.put("k", b"{}", {})
    assert classify(caught.value) is Failure.DENIED
    assert seen == []


@pytest.mark.parametrize(
    ("endpoint", "base"),
    [
        (None, "https://my-bucket.s3.eu-west-1.amazonaws.com/"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/my-bucket/"),
    ],
)
async def test_the_buckets_address_is_botocores(
    aws_env: None, endpoint: str | None, base: str
) -> None:
    settings = StorageSettings(
        s3_bucket="my-bucket", s3_region="eu-west-1", s3_endpoint_url=endpoint
    )
    calls = S3Calls(settings, aioboto3.Session())
    await calls.open()  # no request: the address comes from a pre-signed URL
    try:
        assert calls._puts is not None
        assert calls._puts._base == base
    finally:
        await calls.close()


async def test_a_client_without_connections_to_share_keeps_every_call() -> None:
    assert await _client_connections(object(), "http://127.0.0.1:9000/b/") is None


async def test_a_bucket_reached_through_a_proxy_stays_with_the_client(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    settings = StorageSettings(s3_bucket="my-bucket", s3_endpoint_url="http://10.1.2.3:9000")
    calls = S3Calls(settings, aioboto3.Session())
    await calls.open()
    try:
        assert calls._puts is None
    finally:
        await calls.close()


async def test_seaweedfs_takes_the_signature_and_keeps_the_conditions(
    atomic_store: TaskStore,
) -> None:
    s3 = atomic_store.s3
    sent = record_puts(s3)

    first = await s3.put_json("a/doc.json", b'{"n": 1}', what="doc", if_none_match=True)
    with pytest.raises(Conflict, match="doc already exists"):
        await s3.put_json("a/doc.json", b'{"n": 2}', what="doc", if_none_match=True)
    second = await s3.put_json("a/doc.json", b'{"n": 2}', what="doc", if_match=first)
    with pytest.raises(Conflict, match="changed by another writer"):
        await s3.put_json("a/doc.json", b'{"n": 3}', what="doc", if_match=first)
    await s3.put_empty("a/marker ~+")

    assert sent == ["a/doc.json"] * 4 + ["a/marker ~+"]
    assert await s3.read("a/doc.json") == (b'{"n": 2}', second)
    assert await s3.read("a/marker ~+") == (b"", await _etag(s3, "a/marker ~+"))


async def _etag(s3: Any, key: str) -> str:
    return str((await s3.client.head_object(Bucket=s3.bucket, Key=key))["ETag"])
