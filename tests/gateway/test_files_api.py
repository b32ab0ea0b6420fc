"""The REST file API in process: the gateway app (through ASGI) over a real gRPC channel to a
real storage_svc FileService on moto S3, callers authenticated by a stand-in orchestrator."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.app import create_app
from gateway.settings import GatewaySettings
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from tests.helpers import assert_eventually, free_port
from tests.storage_svc import conftest as storage_fixtures
from tests.storage_svc.conftest import BUCKET, Clock
from wealthai.orchestrator.v1 import orchestrator_pb2 as opb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc
from wealthai.storage.v1 import files_pb2_grpc

# storage_svc's fixtures: moto in server mode, reset for each test, and a settable clock.
moto_url = storage_fixtures.moto_url
aws_env = storage_fixtures.aws_env
s3_url = storage_fixtures.s3_url
aws_session = storage_fixtures.aws_session
make_settings = storage_fixtures.make_settings
make_store = storage_fixtures.make_store
clock = storage_fixtures.clock

MIB = 1024 * 1024
ADMIN_KEY = "wak_admin_test-bootstrap-key-of-32-characters-or-more"
ANN_KEY = "wak_0000000000a1_" + "a" * 43
BOB_KEY = "wak_0000000000b2_" + "b" * 43
PRINCIPALS = {ANN_KEY: "acme/ann", BOB_KEY: "globex/bob"}
LIMIT = 6 * MIB


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ANN, BOB, ADMIN = bearer(ANN_KEY), bearer(BOB_KEY), bearer(ADMIN_KEY)


class Keys(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """The orchestrator as far as the gateway's authentication needs it."""

    async def ResolveKey(self, request: Any, context: Any) -> Any:
        from common.errors import Unauthenticated

        principal = PRINCIPALS.get(request.key)
        if principal is None:
            raise Unauthenticated("unknown key")
        return opb.ResolvedKey(principal_id=principal, tenant=principal.split("/")[0])


@pytest.fixture
def store_settings() -> dict[str, Any]:
    """Storage settings of the test (parts of 5 MiB, so 6 MiB uploads go multipart)."""
    return {"file_part_bytes": 5 * MIB}


@pytest.fixture
async def file_store(
    make_store: Any, clock: Clock, store_settings: dict[str, Any]
) -> AsyncIterator[FileStore]:
    store = await make_store(**store_settings)
    file_store = FileStore(store.s3, clock=clock)
    await file_store.prepare()
    yield file_store


AppFactory = Callable[..., Awaitable[FastAPI]]
Gateway = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def gateway_app(file_store: FileStore) -> AsyncIterator[AppFactory]:
    """Factory: a running gateway app over ``file_store`` served by a real gRPC server
    (keyword arguments override gateway settings)."""
    plaintext = GrpcServerSettings(tls_mode="plaintext")
    storage = ServiceHost(plaintext, "storage_svc", Role.STORAGE)
    storage.add(
        files_pb2_grpc.add_FileServiceServicer_to_server,
        FileServicer(file_store),
        FILE_SERVICE_NAME,
    )
    keys = ServiceHost(plaintext, "orchestrator", Role.ORCHESTRATOR)
    keys.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, Keys(), "o")
    storage_port, keys_port = await storage.start(), await keys.start()
    lifespans: list[Any] = []

    async def make(**overrides: Any) -> FastAPI:
        values: dict[str, Any] = {
            "orchestrator_target": f"127.0.0.1:{keys_port}",
            "storage_target": f"127.0.0.1:{storage_port}",
            "admin_key": ADMIN_KEY,
            "tls_mode": "plaintext",
            "file_max_bytes": LIMIT,
            "max_body_bytes": 64 * 1024,
        }
        values.update(overrides)
        app = create_app(GatewaySettings(**values))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        lifespans.append(lifespan)
        return app

    yield make
    for lifespan in lifespans:
        await lifespan.__aexit__(None, None, None)
    await storage.server.stop(None)
    await keys.server.stop(None)


@pytest.fixture
async def gateway(gateway_app: AppFactory) -> AsyncIterator[Gateway]:
    """Factory: a client calling a new gateway app (settings as for ``gateway_app``) as ann."""
    clients: list[httpx.AsyncClient] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        app = await gateway_app(**overrides)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=ANN
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api(gateway: Gateway) -> httpx.AsyncClient:
    return await gateway()


async def multipart_uploads(file_store: FileStore) -> list[Any]:
    answer = await file_store.s3.client.list_multipart_uploads(Bucket=BUCKET)
    return list(answer.get("Uploads", []))


async def file_objects(file_store: FileStore) -> list[str]:
    answer = await file_store.s3.client.list_objects_v2(Bucket=BUCKET, Prefix="files/")
    return [item["Key"] for item in answer.get("Contents", [])]


async def upload(
    api: httpx.AsyncClient, data: bytes, name: str = "data.bin", **kwargs: Any
) -> dict[str, Any]:
    headers = {"X-Filename": name, "Content-Type": "application/octet-stream"}
    headers.update(kwargs.pop("headers", {}))
    reply = await api.post("/files", content=data, headers=headers, **kwargs)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def test_a_raw_upload_answers_201_with_the_metadata_and_downloads_back(
    api: httpx.AsyncClient,
) -> None:
    data = os.urandom(7 * MIB // 2)

    reply = await api.post(
        "/files",
        params={"temporary": "true"},
        content=data,
        headers={"X-Filename": "r%C3%A9sum%C3%A9 1.csv", "Content-Type": "text/csv"},
    )

    assert reply.status_code == 201, reply.text
    meta = reply.json()
    assert reply.headers["Location"] == f"/files/{meta['file_id']}"
    assert meta["name"] == "résumé 1.csv"
    assert (meta["size"], meta["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (meta["content_type"], meta["temporary"], meta["owner"]) == (
        "text/csv",
        True,
        "acme/ann",
    )
    assert meta["created_at"] < meta["expires_at"]
    got = await api.get(reply.headers["Location"])
    assert got.status_code == 200 and got.content == data
    assert got.headers["Content-Type"] == "text/csv"
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["ETag"] == f'"{meta["sha256"]}"'
    assert got.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ 1.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.csv"
    )
    head = await api.head(reply.headers["Location"])
    assert head.status_code == 200 and head.content == b""
    assert {k: head.headers[k] for k in ("Content-Length", "ETag", "Content-Disposition")} == {
        k: got.headers[k] for k in ("Content-Length", "ETag", "Content-Disposition")
    }
    assert (await api.get("/files/" + meta["file_id"] + "/url")).status_code == 200


async def test_an_empty_file_uploads_and_downloads(api: httpx.AsyncClient) -> None:
    meta = await upload(api, b"", "empty.txt")

    got = await api.get(f"/files/{meta['file_id']}")

    assert (got.status_code, got.content, got.headers["Content-Length"]) == (200, b"", "0")
    assert (
        await api.get(f"/files/{meta['file_id']}", headers={"Range": "bytes=0-"})
    ).status_code == 416


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),  # the start
        ("bytes=4000-4999", 4000, 4999),  # the middle
        ("bytes=9990-", 9990, 9999),  # the end
        ("bytes=-10", 9990, 9999),  # the last bytes
        ("bytes=9000-20000", 9000, 9999),  # past the end: capped
    ],
)
async def test_one_range_answers_206_with_its_bytes(
    api: httpx.AsyncClient, header: str, start: int, end: int
) -> None:
    data = os.urandom(10_000)
    file_id = (await upload(api, data))["file_id"]

    for method in ("GET", "HEAD"):
        got = await api.request(method, f"/files/{file_id}", headers={"Range": header})

        assert got.status_code == 206
        assert got.headers["Content-Range"] == f"bytes {start}-{end}/10000"
        assert got.headers["Content-Length"] == str(end - start + 1)
        if method == "GET":
            assert got.content == data[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
async def test_a_range_missing_the_file_is_416_naming_its_size(
    api: httpx.AsyncClient, header: str
) -> None:
    file_id = (await upload(api, os.urandom(10_000)))["file_id"]

    for method in ("GET", "HEAD"):
        got = await api.request(method, f"/files/{file_id}", headers={"Range": header})

        assert got.status_code == 416
        assert got.headers["Content-Range"] == "bytes */10000"
        if method == "GET":
            assert got.json()["error"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "pages=1-2", "nonsense"])
async def test_several_or_malformed_ranges_get_the_whole_file(
    api: httpx.AsyncClient, header: str
) -> None:
    data = os.urandom(1000)
    file_id = (await upload(api, data))["file_id"]

    got = await api.get(f"/files/{file_id}", headers={"Range": header})

    assert (got.status_code, got.content) == (200, data)
    assert "Content-Range" not in got.headers


async def test_a_multipart_form_upload_streams_the_file_part(api: httpx.AsyncClient) -> None:
    data = os.urandom(6 * MIB - 1000)

    reply = await api.post(
        "/files",
        data={"comment": "ignored"},
        files={"file": ("prices 2025.xlsx", data, "application/vnd.ms-excel")},
    )

    assert reply.status_code == 201, reply.text
    meta = reply.json()
    assert (meta["name"], meta["content_type"]) == ("prices 2025.xlsx", "application/vnd.ms-excel")
    assert (meta["size"], meta["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (await api.get(f"/files/{meta['file_id']}")).content == data


async def test_a_form_with_two_files_is_refused_and_leaves_nothing(
    api: httpx.AsyncClient, file_store: FileStore
) -> None:
    two = [("a", ("a.bin", b"a" * MIB, "x/y")), ("b", ("b.bin", b"b", "x/y"))]

    reply = await api.post("/files", files=two)

    assert (reply.status_code, reply.json()["error"]) == (422, "invalid_input")
    assert "one file per request" in reply.json()["detail"]
    assert await file_objects(file_store) == []


async def test_a_declared_length_over_the_limit_is_413_before_any_byte_is_read(
    api: httpx.AsyncClient, file_store: FileStore
) -> None:
    pulled = []

    async def body() -> AsyncIterator[bytes]:
        pulled.append(1)
        yield b"x"

    reply = await api.post(
        "/files",
        content=body(),
        headers={"X-Filename": "big", "Content-Length": str(LIMIT + 1)},
    )

    assert (reply.status_code, reply.json()["error"]) == (413, "too_large")
    assert pulled == []


async def test_a_streamed_body_passing_the_limit_is_413_and_its_upload_aborted(
    api: httpx.AsyncClient, file_store: FileStore
) -> None:
    sent = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(12):  # 12 MiB against a limit of 6: multipart started at 5
            sent.append(1)
            yield b"\0" * MIB

    reply = await api.post("/files", content=body(), headers={"X-Filename": "big"})

    assert (reply.status_code, reply.json()["error"]) == (413, "too_large")
    assert f"limit of {LIMIT} bytes" in reply.json()["detail"]
    assert len(sent) == 7  # stopped by the chunk that passed the limit
    # The 413 leaves when the gateway cancels its upload; storage_svc aborts on its own time.
    await assert_eventually(
        lambda: multipart_uploads(file_store), lambda left: left == [], what="upload aborted"
    )
    assert await file_objects(file_store) == []


async def test_an_upload_that_stalls_is_408_and_its_upload_aborted(
    gateway: Gateway, file_store: FileStore
) -> None:
    api = await gateway(body_idle_timeout_s=0.3)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(6):  # past the first 5-MiB part: the multipart upload is under way
            yield b"\0" * MIB
        await asyncio.sleep(3600)  # then nothing: the gateway's bound cuts it
        yield b"never"

    reply = await api.post("/files", content=body(), headers={"X-Filename": "stalled.bin"})

    assert (reply.status_code, reply.json()["error"]) == (408, "request_timeout")
    assert "nothing of it came for 0.3 s" in reply.json()["detail"]
    await assert_eventually(
        lambda: multipart_uploads(file_store), lambda left: left == [], what="upload aborted"
    )
    assert await file_objects(file_store) == []


async def test_an_upload_slower_in_all_than_the_bound_but_never_stalled_is_kept(
    gateway: Gateway,
) -> None:
    api = await gateway(body_idle_timeout_s=0.3)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):  # 0.8 s in all, no gap of 0.3 s
            yield b"\1" * 1024
            await asyncio.sleep(0.2)

    reply = await api.post("/files", content=body(), headers={"X-Filename": "slow.bin"})

    assert reply.status_code == 201, reply.text
    assert reply.json()["size"] == 5 * 1024


async def test_a_request_body_that_stalls_is_408(gateway: Gateway) -> None:
    api = await gateway(body_idle_timeout_s=0.3)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"data": ['
        await asyncio.sleep(3600)
        yield b"]}"

    reply = await api.post("/task/submit", content=body())

    assert (reply.status_code, reply.json()["error"]) == (408, "request_timeout")


async def test_a_client_going_away_mid_upload_leaves_no_multipart_upload(
    gateway_app: AppFactory, file_store: FileStore
) -> None:
    app = await gateway_app()
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"\1" * MIB, "more_body": True} for _ in range(6)
    ]
    uploads_seen: list[int] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        # The client leaves once the multipart upload is under way.
        under_way = await assert_eventually(
            lambda: multipart_uploads(file_store), bool, what="a multipart upload started"
        )
        uploads_seen.append(len(under_way))
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/files",
        "raw_path": b"/files",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gw"),
            (b"authorization", f"Bearer {ANN_KEY}".encode()),
            (b"x-filename", b"gone.bin"),
            (b"content-length", str(LIMIT).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
    }

    await app(scope, receive, send)

    assert uploads_seen == [1]  # the multipart upload was under way when the client left
    await assert_eventually(
        lambda: multipart_uploads(file_store), lambda ups: ups == [], what="the upload aborted"
    )
    assert await file_objects(file_store) == []


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "X-Filename: required"),
        ({"X-Filename": "a%2Fb"}, "X-Filename: a file name"),
        ({"X-Filename": "ok", "Content-Type": "nonsense"}, "Content-Type: 'nonsense'"),
        ({"Content-Type": "multipart/form-data"}, "needs a boundary"),
    ],
)
async def test_a_raw_upload_without_a_good_name_or_type_is_422(
    api: httpx.AsyncClient, headers: dict[str, str], problem: str
) -> None:
    reply = await api.post("/files", content=b"abc", headers=headers)

    assert (reply.status_code, reply.json()["error"]) == (422, "invalid_input")
    assert problem in reply.json()["detail"]


async def test_another_owners_file_is_404_everywhere_and_admins_see_all(
    api: httpx.AsyncClient,
) -> None:
    anns = await upload(api, b"ann's bytes", "ann.txt")
    bobs = await upload(api, b"bob's bytes", "bob.txt", headers=BOB)
    path = f"/files/{anns['file_id']}"

    for method, url in [
        ("GET", path),
        ("HEAD", path),
        ("GET", f"{path}/url"),
        ("POST", f"{path}/complete"),
        ("DELETE", path),
    ]:
        reply = await api.request(method, url, headers=BOB)
        assert reply.status_code == 404, (method, url, reply.text)
    listed = (await api.get("/files", headers=BOB)).json()
    assert [f["file_id"] for f in listed["files"]] == [bobs["file_id"]]
    assert (await api.get("/files", params={"owner": "acme/ann"}, headers=BOB)).status_code == 403

    everyone = (await api.get("/files", headers=ADMIN)).json()
    assert {f["file_id"] for f in everyone["files"]} == {anns["file_id"], bobs["file_id"]}
    only_ann = (await api.get("/files", params={"owner": "acme/ann"}, headers=ADMIN)).json()
    assert [f["file_id"] for f in only_ann["files"]] == [anns["file_id"]]
    assert (await api.get(path, headers=ADMIN)).content == b"ann's bytes"
    assert (await api.delete(path, headers=ADMIN)).status_code == 204
    assert (await api.get(path)).status_code == 404


async def test_listing_pages_and_delete(api: httpx.AsyncClient) -> None:
    ids = sorted([(await upload(api, bytes([n]), f"{n}.bin"))["file_id"] for n in range(3)])

    first = (await api.get("/files", params={"limit": 2})).json()
    rest = (await api.get("/files", params={"page_token": first["next_page_token"]})).json()

    assert [f["file_id"] for f in first["files"]] == ids[:2] and first["count"] == 2
    assert [f["file_id"] for f in rest["files"]] == ids[2:] and rest["next_page_token"] is None
    deleted = await api.delete(f"/files/{ids[0]}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await api.delete(f"/files/{ids[0]}")).status_code == 404


async def test_a_page_token_of_another_owner_pages_by_file_id_order(api: httpx.AsyncClient) -> None:
    anns = (await upload(api, b"x"))["file_id"]
    lowest = "f_" + "0" * 32 + "_" + "0" * 24
    highest = "f_" + "f" * 32 + "_" + "0" * 24

    for params in ({}, {"owner": "acme/ann"}):
        headers = ADMIN if params else ANN
        after_low = await api.get(
            "/files", params={**params, "page_token": lowest}, headers=headers
        )
        after_high = await api.get(
            "/files", params={**params, "page_token": highest}, headers=headers
        )
        assert [f["file_id"] for f in after_low.json()["files"]] == [anns]
        assert (after_high.status_code, after_high.json()["files"]) == (200, [])


async def test_a_file_past_its_retention_is_404(api: httpx.AsyncClient, clock: Clock) -> None:
    file_id = (await upload(api, b"short-lived"))["file_id"]
    assert (await api.head(f"/files/{file_id}")).status_code == 200

    clock.advance(hours=24, seconds=1)

    for method in ("HEAD", "GET"):
        assert (await api.request(method, f"/files/{file_id}")).status_code == 404
    assert (await api.get("/files")).json()["files"] == []


async def test_presigned_put_complete_then_download_and_url(api: httpx.AsyncClient) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()

    signed = await api.post(
        "/files/presign",
        json={
            "name": "direct.bin",
            "content_type": "x/y",
            "size": len(data),
            "sha256": sha.upper(),
        },
    )

    assert signed.status_code == 200, signed.text
    upload_ = signed.json()
    early = await api.post(f"/files/{upload_['file_id']}/complete")
    assert (early.status_code, early.json()["error"]) == (409, "wrong_state")
    async with httpx.AsyncClient() as s3:
        put = await s3.put(upload_["url"], content=data, headers=upload_["headers"])
        assert put.status_code == 200, put.text
        done = await api.post(f"/files/{upload_['file_id']}/complete")
        assert done.status_code == 200, done.text
        assert (done.json()["size"], done.json()["sha256"]) == (len(data), sha)
        assert (await api.get(f"/files/{upload_['file_id']}")).content == data
        url = (await api.get(f"/files/{upload_['file_id']}/url", params={"expires_s": 60})).json()
        direct = await s3.get(url["url"])
        assert (direct.status_code, direct.content) == (200, data)


async def test_presign_refuses_sizes_over_the_limit_and_bad_fields(api: httpx.AsyncClient) -> None:
    big = await api.post("/files/presign", json={"name": "x", "size": LIMIT + 1})
    bad = await api.post("/files/presign", json={"name": "a/b", "size": 1, "extra": 1})
    loose = await api.post(
        "/files/presign", json={"name": "a", "size": "1", "temporary": 0, "expires_s": True}
    )
    whole = await api.post("/files/presign", json={"name": "a", "size": 5.0, "expires_s": 60.0})

    assert (big.status_code, big.json()["error"]) == (413, "too_large")
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"body.name", "body.extra"}
    fields = {e["field"] for e in loose.json()["errors"]}
    assert fields == {"body.size", "body.temporary", "body.expires_s"}
    assert whole.status_code == 200, whole.text


async def test_the_body_limit_still_holds_for_every_other_route(api: httpx.AsyncClient) -> None:
    body = json.dumps({"name": "x" * (100 * 1024), "size": 1})

    reply = await api.post(
        "/files/presign", content=body, headers={"Content-Type": "application/json"}
    )

    assert (reply.status_code, reply.json()["error"]) == (413, "too_large")


async def test_a_path_that_is_no_file_id_is_404_and_get_of_presign_is_405(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/files/nonsense")).status_code == 404
    wrong = await api.get("/files/presign")
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "POST")


async def test_files_need_a_key(api: httpx.AsyncClient) -> None:
    for method, url in [("POST", "/files"), ("GET", "/files"), ("POST", "/files/presign")]:
        reply = await api.request(method, url, headers={"Authorization": ""})
        assert reply.status_code == 401, (method, url)


async def test_storage_down_is_503(gateway: Gateway) -> None:
    api = await gateway(storage_target=f"127.0.0.1:{free_port()}", call_timeout_s=3)

    reply = await api.get("/files")

    assert (reply.status_code, reply.json()["error"]) == (503, "unavailable")
