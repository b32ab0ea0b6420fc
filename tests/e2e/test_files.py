"""The file API end to end, every service a real process: a 100 MB upload streamed through the
gateway with bounded memory, ranges, a client leaving mid-upload, the size limit, a form upload,
pre-signed PUT and GET, ownership, expiry, and SSE on every object.

Besides the stack of the module, one more storage_svc and gateway run on the same S3: storage
keeps files for 7 seconds under a prefix of its own (so its sweeper touches nothing else), and
its gateway takes files of at most 12 MiB (past the first 8 MiB part, so the limit cuts a
multipart upload short).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bench.procstats import usage
from scripts.devstack import Proc, Stack
from tests.e2e.conftest import BUCKET
from tests.helpers import assert_eventually, free_port

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
BIG = 100 * MIB
SHORT_LIMIT = 12 * MIB
SHORT_PREFIX = "short-files/"
SHORT_IDLE_S = 2
SHORT_RETENTION_H = 0.002  # 7.2 s


def generated(size: int, seed: bytes = b"") -> tuple[AsyncIterator[bytes], Any]:
    """``size`` bytes made on the fly (1 MiB at a time, never all at once) and the SHA-256 they
    add up to, known once they are all out."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(0, size, MIB):
            chunk = n.to_bytes(8, "big") + block[8 : min(MIB, size - n)]
            digest.update(chunk)
            yield chunk

    return chunks(), digest


def rss_now(stack: Stack, name: str) -> int:
    popen = stack.procs[name].popen
    assert popen is not None
    return usage(popen.pid).rss


def peak_rss(stack: Stack, name: str) -> int:
    popen = stack.procs[name].popen
    assert popen is not None
    return usage(popen.pid).peak_rss


def objects(s3: Any, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def multipart_uploads(s3: Any) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))


@pytest.fixture(scope="module")
def short(stack: Stack) -> Iterator[str]:
    """A second storage_svc (files expire after 7 s) and its gateway (12 MiB limit, headers
    that take 2 s and bodies that stall for 2 s cut): its URL."""
    specs = {spec.name: spec for spec in stack.specs()}
    storage_port, gateway_port = free_port(), free_port()
    storage = specs["storage"]
    stack.procs["storage-short"] = Proc(
        "storage-short",
        storage_port,
        storage.argv,
        {
            **storage.env,
            "STORAGE_PORT": str(storage_port),
            "STORAGE_FILES_PREFIX": SHORT_PREFIX,
            "STORAGE_FILE_RETENTION_HOURS": str(SHORT_RETENTION_H),
            "STORAGE_FILE_SWEEP_INTERVAL_S": "2",
        },
    )
    gateway = specs["gateway"]
    stack.procs["gateway-short"] = Proc(
        "gateway-short",
        gateway_port,
        gateway.argv,
        {
            **gateway.env,
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_STORAGE_TARGET": f"127.0.0.1:{storage_port}",
            "GATEWAY_FILE_MAX_BYTES": str(SHORT_LIMIT),
            "GATEWAY_BODY_IDLE_TIMEOUT_S": str(SHORT_IDLE_S),
            "GATEWAY_HEADER_TIMEOUT_S": str(SHORT_IDLE_S),
        },
    )
    stack.launch("storage-short", timeout=60)
    stack.launch("gateway-short", timeout=60)
    yield f"http://127.0.0.1:{gateway_port}"
    for name in ("gateway-short", "storage-short"):
        stack.kill(name)
        del stack.procs[name]


@pytest.fixture
async def short_api(stack: Stack, short: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=short, timeout=30, headers={"Authorization": f"Bearer {stack.admin_key}"}
    ) as client:
        yield client


async def new_key(api: httpx.AsyncClient, name: str) -> dict[str, str]:
    reply = await api.post("/admin/keys", json={"name": name, "tenant": "acme", "role": "client"})
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['key']}"}


async def upload(api: httpx.AsyncClient, data: bytes, name: str = "f.bin", **kw: Any) -> dict:
    headers = {"X-Filename": name, "Content-Type": "application/octet-stream"}
    reply = await api.post("/files", content=data, headers={**headers, **kw.pop("headers", {})})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


@pytest.mark.timeout(120)
async def test_100_mb_streams_through_with_bounded_memory_and_ranges_read_it(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    before = {name: rss_now(stack, name) for name in ("gateway", "storage")}
    chunks, digest = generated(BIG, b"big")

    reply = await api.post(
        "/files",
        content=chunks,
        headers={"X-Filename": "big.bin", "Content-Length": str(BIG)},
        timeout=120,
    )

    assert reply.status_code == 201, reply.text
    meta = reply.json()
    assert (meta["size"], meta["sha256"]) == (BIG, digest.hexdigest())
    back = hashlib.sha256()
    async with api.stream("GET", f"/files/{meta['file_id']}", timeout=120) as got:
        assert got.status_code == 200
        assert got.headers["Content-Length"] == str(BIG)
        async for chunk in got.aiter_raw():
            back.update(chunk)
    assert back.hexdigest() == meta["sha256"]
    for name, rss in before.items():
        growth = (peak_rss(stack, name) - rss) / MIB
        assert growth < 200, f"{name} grew by {growth:.0f} MiB"

    block = hashlib.sha256(b"big").digest() * (MIB // 32)
    middle = 50 * MIB
    for header, start, end in [
        ("bytes=0-15", 0, 15),
        (f"bytes={middle}-{middle + 99}", middle, middle + 99),
        ("bytes=-8", BIG - 8, BIG - 1),
    ]:
        part = await api.get(f"/files/{meta['file_id']}", headers={"Range": header})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes {start}-{end}/{BIG}"
        offset = start % MIB
        expected = ((start - offset).to_bytes(8, "big") + block[8:])[
            offset : offset + end - start + 1
        ]
        assert part.content == expected
    missed = await api.get(f"/files/{meta['file_id']}", headers={"Range": f"bytes={BIG}-"})
    assert (missed.status_code, missed.headers["Content-Range"]) == (416, f"bytes */{BIG}")
    assert (await api.delete(f"/files/{meta['file_id']}")).status_code == 204


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw_upload(
    port: int, stack: Stack, name: str, length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the gateway on ``port`` that has sent the headers of a ``POST /files``
    of ``name`` declaring ``length`` bytes, and no byte of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "POST /files HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {stack.admin_key}\r\n"
            f"X-Filename: {name}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
    )
    return reader, writer


async def nothing_left(s3: Any, prefix: str, stored: list[str] | None = None) -> None:
    """No multipart upload under way (waiting for storage_svc to abort it), and the objects
    under ``prefix`` those ``stored`` before (none if not given)."""
    await assert_eventually(
        lambda: asyncio.to_thread(multipart_uploads, s3),
        lambda uploads: uploads == [],
        timeout=30,
        what="no multipart upload left",
    )
    assert await asyncio.to_thread(objects, s3, prefix) == (stored or [])


async def test_a_client_leaving_mid_upload_leaves_no_multipart_upload(
    stack: Stack, s3: Any
) -> None:
    stored = await asyncio.to_thread(objects, s3, "files/data/")
    _reader, writer = await raw_upload(stack.ports.gateway, stack, "abandoned.bin", 50 * MIB)
    for _ in range(20):
        writer.write(b"\2" * MIB)
        await writer.drain()

    await assert_eventually(
        lambda: asyncio.to_thread(multipart_uploads, s3),
        bool,
        timeout=30,
        what="a multipart upload under way",
    )
    writer.transport.abort()

    await nothing_left(s3, "files/data/", stored)


async def test_over_the_limit_is_413_and_leaves_nothing(
    short: str, short_api: httpx.AsyncClient, stack: Stack, s3: Any
) -> None:
    # Headers only: the answer comes before any byte of the body is sent.
    reader, writer = await raw_upload(port_of(short), stack, "big", SHORT_LIMIT + 1)
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413 ")
    chunks, _ = generated(SHORT_LIMIT + 4 * MIB)

    streamed = await short_api.post("/files", content=chunks, headers={"X-Filename": "big"})

    assert (streamed.status_code, streamed.json()["error"]) == (413, "too_large")
    await nothing_left(s3, SHORT_PREFIX + "data/")


async def test_a_client_that_stops_sending_gets_408_and_leaves_nothing(
    short: str, stack: Stack, s3: Any
) -> None:
    reader, writer = await raw_upload(port_of(short), stack, "stalled", SHORT_LIMIT)
    started = time.monotonic()  # before the gateway's last read: its bound starts later
    writer.write(b"\0" * (6 * MIB))  # past the first part: the multipart upload is under way
    await writer.drain()

    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    waited = time.monotonic() - started
    found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert found, head
    body = json.loads(await reader.readexactly(int(found[1])))
    closed = await asyncio.wait_for(reader.read(), 30)  # the server ends the connection
    writer.close()

    assert head.startswith(b"HTTP/1.1 408 ") and body["error"] == "request_timeout", head
    assert SHORT_IDLE_S <= waited < SHORT_IDLE_S + 10 and closed == b""
    await nothing_left(s3, SHORT_PREFIX + "data/")


async def test_a_connection_that_sends_no_request_is_closed(short: str) -> None:
    started = time.monotonic()  # before the connection: the gateway's bound starts later
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(short))
    writer.write(b"POST /files HTTP/1.1\r\nHost: gw\r\n")  # and never the rest

    closed = await asyncio.wait_for(reader.read(), 30)
    writer.close()

    assert closed == b"" and SHORT_IDLE_S <= time.monotonic() - started < SHORT_IDLE_S + 10


async def test_a_form_upload_streams_its_file_part(api: httpx.AsyncClient) -> None:
    data = os.urandom(3 * MIB)

    reply = await api.post(
        "/files",
        params={"temporary": "true"},
        data={"note": "ignored"},
        files={"file": ("holdings é.csv", data, "text/csv")},
    )

    assert reply.status_code == 201, reply.text
    meta = reply.json()
    assert (meta["name"], meta["content_type"], meta["temporary"]) == (
        "holdings é.csv",
        "text/csv",
        True,
    )
    got = await api.get(f"/files/{meta['file_id']}")
    assert got.content == data
    assert got.headers["Content-Disposition"].endswith("filename*=UTF-8''holdings%20%C3%A9.csv")


async def test_presigned_put_then_get_round_trip(api: httpx.AsyncClient) -> None:
    data = os.urandom(200_000)

    signed = await api.post(
        "/files/presign",
        json={
            "name": "direct.bin",
            "content_type": "application/octet-stream",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert signed.status_code == 200, signed.text
    target = signed.json()
    async with httpx.AsyncClient(timeout=30) as direct:
        put = await direct.put(target["url"], content=data, headers=target["headers"])
        assert put.status_code == 200, put.text
        done = await api.post(f"/files/{target['file_id']}/complete")
        assert done.status_code == 200, done.text
        assert done.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert (await api.get(f"/files/{target['file_id']}")).content == data
        url = (await api.get(f"/files/{target['file_id']}/url")).json()
        fetched = await direct.get(url["url"])
        assert (fetched.status_code, fetched.content) == (200, data)


async def test_another_owners_file_is_404_on_every_route(api: httpx.AsyncClient) -> None:
    ann, bob = await new_key(api, "ann-files"), await new_key(api, "bob-files")
    anns = await upload(api, b"ann's", "ann.txt", headers=ann)
    path = f"/files/{anns['file_id']}"

    for method, url in [
        ("GET", path),
        ("HEAD", path),
        ("GET", f"{path}/url"),
        ("POST", f"{path}/complete"),
        ("DELETE", path),
    ]:
        assert (await api.request(method, url, headers=bob)).status_code == 404, (method, url)
    assert (await api.get("/files", headers=bob)).json()["files"] == []
    assert [f["file_id"] for f in (await api.get("/files", headers=ann)).json()["files"]] == [
        anns["file_id"]
    ]
    everyone = (await api.get("/files", params={"owner": "acme/ann-files"})).json()
    assert [f["file_id"] for f in everyone["files"]] == [anns["file_id"]]
    assert (await api.get(path)).content == b"ann's"


async def test_a_file_expires_after_the_retention(short_api: httpx.AsyncClient, s3: Any) -> None:
    meta = await upload(short_api, b"short-lived")
    assert (await short_api.head(f"/files/{meta['file_id']}")).status_code == 200

    await assert_eventually(
        lambda: short_api.get(f"/files/{meta['file_id']}"),
        lambda reply: reply.status_code == 404,
        timeout=30,
        interval=0.5,
        what="the file expired",
    )
    # Reading an expired file deletes it; the sweeper would have as well.
    await assert_eventually(
        lambda: asyncio.to_thread(objects, s3, SHORT_PREFIX),
        lambda keys: keys == [],
        timeout=30,
        what="its objects deleted",
    )


async def test_every_file_object_is_encrypted(api: httpx.AsyncClient, s3: Any) -> None:
    await upload(api, os.urandom(9 * MIB), "multipart.bin")  # parts of 8 MiB: multipart
    await upload(api, b"small", "small.bin")

    keys = await asyncio.to_thread(objects, s3, "files/")

    assert any(key.startswith("files/data/") for key in keys)
    assert any(key.startswith("files/meta/") for key in keys)
    for key in keys:
        head = await asyncio.to_thread(s3.head_object, Bucket=BUCKET, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", key
