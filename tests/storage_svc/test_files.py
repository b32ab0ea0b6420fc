"""FileStore against a real moto S3 server: streamed uploads, ranges, ownership, expiry,
pre-signed URLs, the sweeper and the bucket rules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from common import file_ids
from common.errors import InvalidInput, NotFound, TooLarge, Unavailable, WrongState
from storage_svc.filemeta import ByteRange, caller
from storage_svc.files import FileStore, NewFile
from tests.storage_svc.conftest import BUCKET, Clock

MIB = 1024 * 1024
ALICE, BOB = caller("alice", False), caller("bob", False)
ADMIN = caller("root", True)


async def chunks_of(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(files: FileStore, who: Any, file_id: str, asked: Any = None) -> bytes:
    opened = await files.open(who, file_id, asked)
    return b"".join([chunk async for chunk in opened.chunks()])


async def multipart_uploads(files: FileStore) -> list[Any]:
    answer = await files.s3.client.list_multipart_uploads(Bucket=BUCKET)
    return list(answer.get("Uploads", []))


async def keys(files: FileStore) -> list[str]:
    answer = await files.s3.client.list_objects_v2(Bucket=BUCKET, Prefix="files/")
    return [item["Key"] for item in answer.get("Contents", [])]


async def test_a_small_file_is_one_put_with_its_record_encrypted(files: FileStore) -> None:
    data = b"hello, files"

    meta = await files.upload(
        NewFile("alice", "notes é.txt", "text/plain", temporary=True), chunks_of(data)
    )

    assert file_ids.REGEX.match(meta.file_id)
    assert (meta.owner, meta.name, meta.content_type) == ("alice", "notes é.txt", "text/plain")
    assert (meta.size, meta.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert meta.temporary is True
    assert meta.expires_at - meta.created_at == files.retention
    assert await files.meta(ALICE, meta.file_id) == meta
    assert await read_all(files, ALICE, meta.file_id) == data
    owner_key = file_ids.owner_key("alice")
    assert sorted(await keys(files)) == [
        f"files/data/{owner_key}/{meta.file_id}",
        f"files/meta/{owner_key}/{meta.file_id}.json",
    ]
    for key in await keys(files):
        head = await files.s3.client.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256"


async def test_an_empty_file_round_trips(files: FileStore) -> None:
    meta = await files.upload(NewFile("alice", "empty"), chunks_of(b""))

    assert (meta.size, meta.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert meta.content_type == "application/octet-stream"
    assert await read_all(files, ALICE, meta.file_id) == b""
    with pytest.raises(TooLarge, match="range not satisfiable"):
        await files.open(ALICE, meta.file_id, ByteRange(0, 0))


async def test_a_large_file_goes_up_in_parts_and_comes_back_whole(files: FileStore) -> None:
    # 2 full parts of 8 MiB and a last one of 1.5 MiB, sent in chunks that straddle parts.
    data = os.urandom(17 * MIB + MIB // 2)
    parts: list[int] = []
    files.s3.client.meta.events.register(
        "before-call.s3.UploadPart",
        lambda params, **_: parts.append(len(params["body"].getvalue())),
    )

    meta = await files.upload(NewFile("alice", "big.bin"), chunks_of(data, 1000 * 1000))

    assert parts == [8 * MIB, 8 * MIB, len(data) - 16 * MIB]
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    back = await read_all(files, ALICE, meta.file_id)
    assert hashlib.sha256(back).hexdigest() == meta.sha256
    head = await files.s3.client.head_object(Bucket=BUCKET, Key=files.layout.data_key(meta.file_id))
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentLength"] == len(data)
    assert await multipart_uploads(files) == []


@pytest.mark.parametrize(
    ("asked", "start", "end"),
    [
        (ByteRange(0, 9), 0, 9),
        (ByteRange(5000, 5999), 5000, 5999),
        (ByteRange(9990), 9990, 9999),
        (ByteRange(9990, 20000), 9990, 9999),
        (ByteRange(suffix=25), 9975, 9999),
        (ByteRange(suffix=20000), 0, 9999),
    ],
)
async def test_ranges_at_the_start_middle_and_end(
    files: FileStore, asked: ByteRange, start: int, end: int
) -> None:
    data = os.urandom(10_000)
    meta = await files.upload(NewFile("alice", "r.bin"), chunks_of(data))

    opened = await files.open(ALICE, meta.file_id, asked)

    assert (opened.start, opened.end) == (start, end)
    assert await read_all(files, ALICE, meta.file_id, asked) == data[start : end + 1]


async def test_a_range_past_the_end_is_out_of_range_and_a_reversed_one_invalid(
    files: FileStore,
) -> None:
    meta = await files.upload(NewFile("alice", "r.bin"), chunks_of(b"x" * 100))

    with pytest.raises(TooLarge, match="range not satisfiable: bytes 100- of a file of 100"):
        await files.open(ALICE, meta.file_id, ByteRange(100))
    with pytest.raises(InvalidInput):
        await files.open(ALICE, meta.file_id, ByteRange(10, 5))


async def test_passing_the_size_limit_stops_at_once_and_leaves_no_parts(
    files: FileStore,
) -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            sent.append(MIB)
            yield b"\0" * MIB

    with pytest.raises(TooLarge, match="size limit of 9437184 bytes"):
        await files.upload(NewFile("alice", "huge", max_bytes=9 * MIB), endless())

    # The 10th MiB passes the limit: nothing more is read from the caller.
    assert len(sent) == 10
    assert await multipart_uploads(files) == []
    assert await keys(files) == []


async def test_a_cancelled_upload_leaves_no_parts(files: FileStore) -> None:
    one_part_sent = asyncio.Event()
    files.s3.client.meta.events.register(
        "after-call.s3.UploadPart", lambda **_: one_part_sent.set()
    )

    async def stalls() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield b"\1" * MIB
        await asyncio.Event().wait()
        yield b""

    upload = asyncio.create_task(files.upload(NewFile("alice", "stalled"), stalls()))
    await asyncio.wait_for(one_part_sent.wait(), 10)
    assert len(await multipart_uploads(files)) == 1
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert await multipart_uploads(files) == []
    assert await keys(files) == []


async def test_an_upload_cancelled_while_s3_creates_it_leaves_no_parts(files: FileStore) -> None:
    """Cancelled after S3 made the multipart upload but before its id came back."""
    client = files.s3.client
    create = client.create_multipart_upload
    made = asyncio.Event()

    async def slow_answer(**params: Any) -> Any:
        answer = await create(**params)
        made.set()
        await asyncio.sleep(0.5)  # the answer is on its way back
        return answer

    client.create_multipart_upload = slow_answer

    async def stalls() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield b"\1" * MIB
        await asyncio.Event().wait()
        yield b""

    upload = asyncio.create_task(files.upload(NewFile("alice", "cut"), stalls()))
    await asyncio.wait_for(made.wait(), 10)
    assert len(await multipart_uploads(files)) == 1
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    for _ in range(100):  # the abort runs in the background once the id is known
        if not await multipart_uploads(files):
            break
        await asyncio.sleep(0.05)
    assert await multipart_uploads(files) == []
    assert await keys(files) == []


async def test_an_upload_cancelled_while_its_record_is_written_is_whole(files: FileStore) -> None:
    """Cancelled after S3 stored the record but before its answer came back (a worker killed
    mid-write): the file is whole and readable, never listed without its bytes."""
    put_json = files.s3.put_json
    stored = asyncio.Event()

    async def slow_answer(key: str, body: bytes, **params: Any) -> str:
        version = await put_json(key, body, **params)
        stored.set()
        await asyncio.sleep(0.5)  # the answer is on its way back
        return version

    files.s3.put_json = slow_answer  # type: ignore[method-assign]
    data = b"kept answer"
    upload = asyncio.create_task(files.upload(NewFile("alice", "chunk.json"), chunks_of(data)))
    await asyncio.wait_for(stored.wait(), 10)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    alice = caller("alice", False)
    for _ in range(40):  # the record's write finishes in the background
        listed, _ = await files.list(alice)
        if listed:
            break
        await asyncio.sleep(0.05)
    (meta,) = listed
    assert meta.name == "chunk.json" and meta.size == len(data)
    assert await read_all(files, alice, meta.file_id) == data


async def test_bytes_whose_record_cannot_be_written_are_removed(files: FileStore) -> None:
    async def refused(key: str, body: bytes, **params: Any) -> str:
        raise Unavailable("S3 refused the record")

    files.s3.put_json = refused  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await files.upload(NewFile("alice", "lost.bin"), chunks_of(b"x" * 10))
    for _ in range(40):  # removed in the background
        if not await keys(files):
            break
        await asyncio.sleep(0.05)
    assert await keys(files) == []


async def test_bad_names_types_and_chunks_are_refused(files: FileStore) -> None:
    for new in (
        NewFile("alice", ""),
        NewFile("alice", "a/b"),
        NewFile("alice", "bell\x07"),
        NewFile("alice", "x" * 256),
        NewFile("alice", "ok", "not a type"),
        NewFile("", "ok"),
    ):
        with pytest.raises(InvalidInput):
            await files.upload(new, chunks_of(b"data"))
    with pytest.raises(InvalidInput, match="at most 1048576 bytes"):
        await files.upload(NewFile("alice", "ok"), chunks_of(b"x" * (MIB + 1), MIB + 1))
    assert await keys(files) == []


async def test_another_owner_finds_nothing_and_an_admin_finds_all(files: FileStore) -> None:
    mine = await files.upload(NewFile("alice", "mine"), chunks_of(b"alice's"))
    theirs = await files.upload(NewFile("bob", "theirs"), chunks_of(b"bob's"))

    for attempt in (
        files.meta(BOB, mine.file_id),
        files.open(BOB, mine.file_id),
        files.delete(BOB, mine.file_id),
        files.presign_get(BOB, mine.file_id),
        files.complete_presigned(BOB, mine.file_id),
    ):
        with pytest.raises(NotFound, match=f"file {mine.file_id} not found"):
            await attempt
    assert [m.file_id for m in (await files.list(BOB))[0]] == [theirs.file_id]
    assert [m.file_id for m in (await files.list(ALICE))[0]] == [mine.file_id]
    with pytest.raises(InvalidInput):
        await files.list(BOB, 10, mine.file_id)

    assert await read_all(files, ADMIN, mine.file_id) == b"alice's"
    everyone = {m.file_id for m in (await files.list(ADMIN))[0]}
    assert everyone == {mine.file_id, theirs.file_id}
    await files.delete(ADMIN, theirs.file_id)
    with pytest.raises(NotFound):
        await files.meta(BOB, theirs.file_id)
    await files.meta(ALICE, mine.file_id)


async def test_listing_pages_through_one_owners_files(files: FileStore) -> None:
    made = [
        (await files.upload(NewFile("alice", f"n{n}"), chunks_of(b"x"))).file_id for n in range(5)
    ]
    await files.upload(NewFile("bob", "other"), chunks_of(b"y"))

    seen: list[str] = []
    token = ""
    for _ in range(5):
        page, token = await files.list(ALICE, 2, token)
        seen += [m.file_id for m in page]
        if not token:
            break

    assert seen == sorted(made)


async def test_delete_removes_bytes_and_record_and_then_is_not_found(files: FileStore) -> None:
    meta = await files.upload(NewFile("alice", "gone"), chunks_of(b"bytes"))

    await files.delete(ALICE, meta.file_id)

    assert await keys(files) == []
    with pytest.raises(NotFound):
        await files.delete(ALICE, meta.file_id)


async def test_an_expired_file_is_not_found_and_deleted_on_read(
    files: FileStore, clock: Clock
) -> None:
    meta = await files.upload(NewFile("alice", "old"), chunks_of(b"old bytes"))
    clock.advance(hours=23, minutes=59)
    assert await files.meta(ALICE, meta.file_id) == meta

    clock.advance(minutes=1)

    assert (await files.list(ALICE))[0] == []
    with pytest.raises(NotFound):
        await files.open(ALICE, meta.file_id)
    assert await keys(files) == []


async def test_the_sweeper_deletes_what_is_past_the_retention(
    files: FileStore, clock: Clock
) -> None:
    old = await files.upload(NewFile("alice", "old"), chunks_of(b"old"))
    assert await files.sweep() == 0
    clock.advance(hours=25)
    # Uploaded "now" on the moved clock, but S3 stamps it with the real time: swept too.
    await files.upload(NewFile("bob", "also old"), chunks_of(b"new"))

    assert await files.sweep() == 4

    assert await keys(files) == []
    with pytest.raises(NotFound):
        await files.meta(ADMIN, old.file_id)


async def test_a_retention_of_hours_rounds_the_lifecycle_up_to_days(
    make_store: Any, clock: Clock
) -> None:
    store = await make_store(file_retention_hours=30)
    files = FileStore(store.s3, clock=clock)
    await files.prepare()
    await files.prepare()

    answer = await store.s3.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    rules = {rule["ID"]: rule for rule in answer["Rules"]}
    assert rules["wealth-ai-file-retention:files/"]["Expiration"] == {"Days": 2}
    assert rules["wealth-ai-file-retention:files/"]["Filter"] == {"Prefix": "files/"}
    abort = rules["wealth-ai-abort-multipart:files/"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # The tasks' rule is kept.
    assert rules["wealth-ai-task-retention:tasks/task_"]["Expiration"] == {"Days": 5}
    assert len(rules) == 2 + 5  # the files' two, and the tasks' five

    meta = await files.upload(NewFile("alice", "f"), chunks_of(b"x"))
    clock.advance(hours=29)
    await files.meta(ALICE, meta.file_id)
    clock.advance(hours=1)
    with pytest.raises(NotFound):
        await files.meta(ALICE, meta.file_id)


async def test_cors_is_put_for_configured_origins_only(make_store: Any) -> None:
    store = await make_store(cors_origins=["https://app.example.com"])
    files = FileStore(store.s3)
    await files.prepare()
    await files.prepare()

    answer = await store.s3.client.get_bucket_cors(Bucket=BUCKET)
    (rule,) = answer["CORSRules"]
    assert rule["AllowedOrigins"] == ["https://app.example.com"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "PUT"]
    assert "x-amz-server-side-encryption" in rule["AllowedHeaders"]

    closed = FileStore((await make_store(cors_origins=[])).s3)
    await closed.prepare()
    with pytest.raises(Exception, match="NoSuchCORSConfiguration"):
        await store.s3.client.get_bucket_cors(Bucket=BUCKET)


async def test_presigned_put_then_get_round_trip_over_http(files: FileStore) -> None:
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()

    upload = await files.presign_put(
        NewFile("alice", "direct.bin", "application/pdf"), len(data), 60, sha
    )

    signed = parse_qs(urlsplit(upload.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"x-amz-server-side-encryption", "content-type", "content-length"} <= set(signed)
    assert upload.headers["x-amz-server-side-encryption"] == "AES256"
    assert upload.headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert 0 < (upload.expires_at - files.now()).total_seconds() <= 60
    with pytest.raises(NotFound):
        await files.meta(ALICE, upload.file_id)
    with pytest.raises(WrongState, match="not been uploaded yet"):
        await files.complete_presigned(ALICE, upload.file_id)

    async with httpx.AsyncClient() as http:
        put = await http.put(upload.url, content=data, headers=upload.headers)
        assert put.status_code == 200, put.text
        meta = await files.complete_presigned(ALICE, upload.file_id)
        assert (meta.size, meta.sha256, meta.name) == (len(data), sha, "direct.bin")
        assert await files.complete_presigned(ALICE, upload.file_id) == meta
        assert [m.file_id for m in (await files.list(ALICE))[0]] == [upload.file_id]

        url = await files.presign_get(ALICE, upload.file_id, 120)
        got = await http.get(url.url)

    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''direct.bin"
    head = await files.s3.client.head_object(
        Bucket=BUCKET, Key=files.layout.data_key(upload.file_id)
    )
    assert head["ServerSideEncryption"] == "AES256"


async def test_presigned_validity_is_bounded(files: FileStore, clock: Clock) -> None:
    meta = await files.upload(NewFile("alice", "f"), chunks_of(b"x"))

    longest = await files.presign_get(ALICE, meta.file_id, 10**6)
    assert (longest.expires_at - files.now()).total_seconds() == 3600
    default = await files.presign_get(ALICE, meta.file_id)
    assert (default.expires_at - files.now()).total_seconds() == 900
    clock.advance(hours=23, minutes=50)
    near_end = await files.presign_get(ALICE, meta.file_id, 3600)
    assert near_end.expires_at <= meta.expires_at
    assert "X-Amz-Expires=" in near_end.url


async def test_a_presigned_upload_of_the_wrong_size_is_refused_and_removed(
    files: FileStore,
) -> None:
    upload = await files.presign_put(NewFile("alice", "f"), 10)
    # moto does not check signatures; the client here breaks its promise.
    headers = {**upload.headers, "Content-Length": "5"}
    async with httpx.AsyncClient() as http:
        put = await http.put(upload.url, content=b"12345", headers=headers)
    assert put.status_code == 200

    with pytest.raises(InvalidInput, match="5 bytes arrived, 10 were signed for"):
        await files.complete_presigned(ALICE, upload.file_id)
    assert await keys(files) == [files.layout.meta_key(upload.file_id)]


async def test_a_presigned_upload_over_the_limit_is_refused(make_store: Any) -> None:
    files = FileStore((await make_store(file_max_bytes=5 * MIB)).s3)

    with pytest.raises(TooLarge):
        await files.presign_put(NewFile("alice", "f"), 5 * MIB + 1)
