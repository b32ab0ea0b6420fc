"""FileService through a real gRPC server on loopback, over a real moto S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest

from common import file_ids
from storage_svc.files import FileStore
from tests.helpers import assert_eventually, free_port
from tests.storage_svc.conftest import BUCKET, HostFactory, StoreFactory
from wealthai.storage.v1 import files_pb2 as pb
from wealthai.storage.v1 import files_pb2_grpc

MIB = 1024 * 1024


def start(owner: str = "alice", name: str = "f.bin", **fields: Any) -> pb.UploadChunk:
    return pb.UploadChunk(start=pb.UploadStart(owner=owner, name=name, **fields))


def upload_of(data: bytes, chunk: int = 64 * 1024, **fields: Any) -> Iterator[pb.UploadChunk]:
    yield start(**fields)
    for offset in range(0, len(data), chunk):
        yield pb.UploadChunk(data=data[offset : offset + chunk])


async def download(stub: Any, **fields: Any) -> tuple[pb.DownloadChunk, bytes]:
    messages = [m async for m in stub.Download(pb.DownloadRequest(**fields))]
    assert messages[0].data == b""
    assert all(not m.HasField("meta") for m in messages[1:])
    assert all(len(m.data) <= MIB for m in messages)
    return messages[0], b"".join(m.data for m in messages[1:])


async def multipart_uploads(files: FileStore) -> list[Any]:
    answer = await files.s3.client.list_multipart_uploads(Bucket=BUCKET)
    return list(answer.get("Uploads", []))


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_upload_then_meta_list_and_download(file_stub: Any) -> None:
    data = os.urandom(200_000)

    meta = await file_stub.Upload(
        upload_of(data, name="report é.pdf", content_type="application/pdf", temporary=True)
    )

    assert (meta.owner, meta.name) == ("alice", "report é.pdf")
    assert meta.content_type == "application/pdf"
    assert (meta.size, meta.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert meta.temporary
    assert meta.created_at.endswith("Z") and meta.expires_at > meta.created_at
    asked = pb.FileRequest(file_id=meta.file_id, owner="alice")
    assert await file_stub.GetMeta(asked) == meta
    listed = await file_stub.ListFiles(pb.ListFilesRequest(owner="alice"))
    assert (list(listed.files), listed.next_page_token) == ([meta], "")
    first, back = await download(file_stub, file_id=meta.file_id, owner="alice")
    assert first.meta == meta
    assert (first.range_start, first.range_end) == (0, len(data) - 1)
    assert back == data


async def test_the_metadata_names_the_object_key_of_the_bytes(
    file_stub: Any, files: FileStore
) -> None:
    data = b"key me"
    meta = await file_stub.Upload(upload_of(data))

    assert meta.key == f"files/data/{file_ids.owner_key('alice')}/{meta.file_id}"
    stored = await files.s3.client.get_object(Bucket=BUCKET, Key=meta.key)
    assert await stored["Body"].read() == data
    asked = pb.FileRequest(file_id=meta.file_id, owner="alice")
    assert (await file_stub.GetMeta(asked)).key == meta.key
    first, _ = await download(file_stub, file_id=meta.file_id, owner="alice")
    assert first.meta.key == meta.key


@pytest.mark.parametrize(
    ("asked", "start_", "end"),
    [
        ({"span": pb.ByteRange(start=0, end=99)}, 0, 99),
        ({"span": pb.ByteRange(start=4000, end=4999)}, 4000, 4999),
        ({"span": pb.ByteRange(start=9000)}, 9000, 9999),
        ({"suffix_length": 10}, 9990, 9999),
    ],
)
async def test_ranges_over_grpc(
    file_stub: Any, asked: dict[str, Any], start_: int, end: int
) -> None:
    data = os.urandom(10_000)
    meta = await file_stub.Upload(upload_of(data))

    first, back = await download(file_stub, file_id=meta.file_id, owner="alice", **asked)

    assert (first.range_start, first.range_end) == (start_, end)
    assert back == data[start_ : end + 1]


async def test_an_unsatisfiable_range_is_out_of_range(file_stub: Any) -> None:
    meta = await file_stub.Upload(upload_of(b"x" * 10))

    err = await rpc_error(
        download(file_stub, file_id=meta.file_id, owner="alice", span=pb.ByteRange(start=10))
    )

    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "range not satisfiable" in (err.details() or "")


async def test_over_the_size_limit_is_out_of_range_and_leaves_no_parts(
    files: FileStore, file_stub: Any
) -> None:
    async def endless() -> AsyncIterator[pb.UploadChunk]:
        yield start(max_bytes=6 * MIB)
        for _ in range(7):
            yield pb.UploadChunk(data=b"\0" * MIB)
        # Past the limit, the client waits with nothing in flight: a write racing the
        # server's status would end the call INTERNAL on the client's side instead.
        await asyncio.Event().wait()
        yield pb.UploadChunk()  # never reached

    err = await rpc_error(file_stub.Upload(endless()))

    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "size limit of 6291456 bytes" in (err.details() or "")
    assert await multipart_uploads(files) == []


async def test_a_client_cancelling_mid_upload_leaves_no_parts(
    files: FileStore, file_stub: Any
) -> None:
    parts_sent = asyncio.Event()
    files.s3.client.meta.events.register("after-call.s3.UploadPart", lambda **_: parts_sent.set())

    async def stalls() -> AsyncIterator[pb.UploadChunk]:
        yield start()
        for _ in range(9):
            yield pb.UploadChunk(data=b"\1" * MIB)
        await asyncio.Event().wait()

    call = file_stub.Upload(stalls())
    await asyncio.wait_for(parts_sent.wait(), 20)
    assert len(await multipart_uploads(files)) == 1

    call.cancel()

    await assert_eventually(
        lambda: multipart_uploads(files), lambda ups: ups == [], what="multipart upload aborted"
    )


async def test_a_stream_must_open_with_start_and_only_once(file_stub: Any) -> None:
    no_start = await rpc_error(file_stub.Upload(iter([pb.UploadChunk(data=b"x")])))
    twice = await rpc_error(file_stub.Upload(iter([start(), start()])))
    no_owner = await rpc_error(file_stub.Upload(iter([start(owner="")])))
    empty = await rpc_error(file_stub.Upload(iter([])))

    for err in (no_start, twice, no_owner, empty):
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


async def test_another_owners_file_is_not_found_in_every_rpc_and_admins_see_all(
    file_stub: Any,
) -> None:
    meta = await file_stub.Upload(upload_of(b"alice's bytes"))
    bobs = await file_stub.Upload(upload_of(b"bob's", owner="bob"))
    bob = {"file_id": meta.file_id, "owner": "bob"}

    calls = [
        file_stub.GetMeta(pb.FileRequest(**bob)),
        download(file_stub, **bob),
        file_stub.DeleteFile(pb.FileRequest(**bob)),
        file_stub.PresignGet(pb.PresignGetRequest(**bob)),
        file_stub.CompletePresigned(pb.FileRequest(**bob)),
    ]
    for call in calls:
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    listed = await file_stub.ListFiles(pb.ListFilesRequest(owner="bob"))
    assert [f.file_id for f in listed.files] == [bobs.file_id]

    admin = {"file_id": meta.file_id, "owner": "root", "admin": True}
    assert await file_stub.GetMeta(pb.FileRequest(**admin)) == meta
    assert (await download(file_stub, **admin))[1] == b"alice's bytes"
    everyone = await file_stub.ListFiles(pb.ListFilesRequest(owner="root", admin=True))
    assert {f.file_id for f in everyone.files} == {meta.file_id, bobs.file_id}
    await file_stub.DeleteFile(pb.FileRequest(**admin))
    gone = await rpc_error(file_stub.GetMeta(pb.FileRequest(file_id=meta.file_id, owner="alice")))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_presigned_put_complete_and_get_over_http(file_stub: Any) -> None:
    data = b"straight to S3"

    upload = await file_stub.PresignPut(
        pb.PresignPutRequest(
            owner="alice", name="d.txt", content_type="text/plain", size=len(data), expires_s=60
        )
    )
    async with httpx.AsyncClient() as http:
        put = await http.put(upload.url, content=data, headers=dict(upload.headers))
        assert put.status_code == 200
        meta = await file_stub.CompletePresigned(
            pb.FileRequest(file_id=upload.file_id, owner="alice")
        )
        url = await file_stub.PresignGet(pb.PresignGetRequest(file_id=meta.file_id, owner="alice"))
        got = await http.get(url.url)

    assert upload.headers["x-amz-server-side-encryption"] == "AES256"
    assert (meta.file_id, meta.size, meta.sha256) == (upload.file_id, len(data), "")
    assert got.content == data
    assert url.expires_at.endswith("Z")


async def test_a_presign_over_the_limit_is_out_of_range(file_stub: Any) -> None:
    err = await rpc_error(
        file_stub.PresignPut(pb.PresignPutRequest(owner="alice", name="n", size=2 * 1024**3))
    )

    assert err.code() == grpc.StatusCode.OUT_OF_RANGE


@pytest.fixture
def moto_process(aws_env: None) -> Iterator[str]:
    """A moto server in a process of its own, so the bytes it keeps are not this process's."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=0.5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_100_mb_streams_through_with_bounded_memory(
    moto_process: str, serve: HostFactory, make_store: StoreFactory
) -> None:
    store = await make_store(s3_endpoint_url=moto_process, s3_read_timeout_s=30.0)
    files = FileStore(store.s3)
    stub = files_pb2_grpc.FileServiceStub(await serve(files))
    size, block = 100 * MIB, os.urandom(MIB)
    expected = hashlib.sha256()

    def chunks() -> Iterator[pb.UploadChunk]:
        yield start(name="big.bin")
        for n in range(size // MIB):
            # Each chunk differs, so a part mixed up with another changes the checksum.
            data = n.to_bytes(4, "big") + block[4:]
            expected.update(data)
            yield pb.UploadChunk(data=data)

    tracemalloc.start()
    try:
        meta = await stub.Upload(chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert meta.size == size
    assert meta.sha256 == expected.hexdigest()
    # Server and client both run here: a part (8 MiB), its copy and a few chunks, not 100 MiB.
    assert peak < 48 * MIB, peak
    assert await multipart_uploads(files) == []
    back = hashlib.sha256()
    received = 0
    async for message in stub.Download(pb.DownloadRequest(file_id=meta.file_id, owner="alice")):
        back.update(message.data)
        received += len(message.data)
    assert (received, back.hexdigest()) == (size, meta.sha256)
