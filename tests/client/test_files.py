"""Uploads and downloads against a scripted gateway, on both clients: what an upload sends
(streamed, its name, type and length, progress), where a download lands, and that a download
that is cut short or corrupted leaves no file behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp import web

from tests.client.conftest import FILE_ID, KEY, Scripted
from wealthai_client import AsyncClient, BadInput, NotFound, ServerError, Unreachable
from wealthai_client.config import Config
from wealthai_client.files import CHUNK_BYTES, name_of

DATA = bytes(range(256)) * 9000  # 2.2 MiB: three chunks


def stored(request_body: bytes, name: str, content_type: str) -> dict[str, Any]:
    return {
        "file_id": FILE_ID,
        "name": name,
        "size": len(request_body),
        "sha256": hashlib.sha256(request_body).hexdigest(),
        "content_type": content_type,
        "created_at": "2026-12-01T12:00:00Z",
        "expires_at": "2026-12-02T12:00:00Z",
        "temporary": False,
        "owner": "acme/ann",
    }


def echo_upload() -> Any:
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        name = unquote(request.headers["X-Filename"])
        return web.json_response(stored(body, name, request.content_type), status=201)

    return handler


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


def test_an_upload_from_a_path_streams_the_file_with_its_name_type_and_length(
    scripted: Scripted, call: Any, tmp_path: Path
) -> None:
    path = tmp_path / "relevé 2026.csv"
    path.write_bytes(DATA)
    scripted.on("POST", "/files", echo_upload())
    progress = Recorder()
    out = call("upload", path, temporary=True, progress=progress)
    assert (out.name, out.size, out.content_type) == ("relevé 2026.csv", len(DATA), "text/csv")
    (seen,) = scripted.requests("POST", "/files")
    assert seen.body == DATA
    assert seen.headers["X-Filename"] == "relev%C3%A9%202026.csv"
    assert seen.headers["Content-Length"] == str(len(DATA))
    assert seen.query == {"temporary": "true"}
    assert progress.calls[0] == (0, len(DATA)) and progress.calls[-1] == (len(DATA), len(DATA))
    assert len(progress.calls) == 1 + -(-len(DATA) // CHUNK_BYTES)  # one per chunk sent


def test_an_upload_of_chunks_needs_a_name_and_goes_chunked(scripted: Scripted, call: Any) -> None:
    with pytest.raises(BadInput, match="name: required"):
        call("upload", iter([b"a"]))
    scripted.on("POST", "/files", echo_upload())
    out = call("upload", iter([b"abc", b"def"]), name="x.bin", content_type="application/x-test")
    assert (out.size, out.content_type) == (6, "application/x-test")
    (seen,) = scripted.requests("POST", "/files")
    assert "Content-Length" not in seen.headers
    assert seen.headers["Transfer-Encoding"] == "chunked"


def test_bytes_upload_with_their_length(scripted: Scripted, call: Any) -> None:
    scripted.on("POST", "/files", echo_upload())
    out = call("upload", b"hello", name="h.txt")
    assert (out.size, out.content_type) == (5, "text/plain")
    assert scripted.requests("POST", "/files")[0].headers["Content-Length"] == "5"


async def test_the_async_client_uploads_from_an_async_iterable(scripted: Scripted) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"cd"):
            await asyncio.sleep(0)
            yield part

    scripted.on("POST", "/files", echo_upload())
    progress = Recorder()
    async with AsyncClient(config=Config(scripted.url, KEY)) as api:
        out = await api.upload(chunks(), name="a.bin", progress=progress)
    assert out.size == 4
    assert progress.calls == [(0, None), (2, None), (4, None)]


def test_an_upload_of_what_is_not_a_file_is_refused(call: Any, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a file"):
        call("upload", tmp_path)
    with pytest.raises(BadInput, match="not a file"):
        call("upload", tmp_path / "absent.csv")


def download_of(data: bytes, name: str = "relevé.csv", **headers: str) -> Any:
    async def handler(_: web.Request) -> web.Response:
        quoted = quote(name, safe="")
        sent = {
            "Content-Type": "text/csv",
            "Content-Disposition": f"attachment; filename=\"x\"; filename*=UTF-8''{quoted}",
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            **headers,
        }
        return web.Response(body=data, headers=sent)

    return handler


def test_a_download_lands_in_a_folder_under_its_name_checked(
    scripted: Scripted, call: Any, tmp_path: Path
) -> None:
    scripted.on("GET", f"/files/{FILE_ID}", download_of(DATA))
    progress = Recorder()
    got = call("download", FILE_ID, tmp_path, progress=progress)
    assert got.path == tmp_path / "relevé.csv"
    assert got.path.read_bytes() == DATA
    assert (got.size, got.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert progress.calls[-1] == (len(DATA), len(DATA))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relevé.csv"]


def test_a_download_to_a_path_takes_that_name(
    scripted: Scripted, call: Any, tmp_path: Path
) -> None:
    scripted.on("GET", f"/files/{FILE_ID}", download_of(b"abc"))
    assert call("download", FILE_ID, tmp_path / "mine.csv").path.read_bytes() == b"abc"


def test_a_corrupted_download_leaves_nothing(scripted: Scripted, call: Any, tmp_path: Path) -> None:
    scripted.on("GET", f"/files/{FILE_ID}", download_of(b"abc", ETag='"' + "0" * 64 + '"'))
    with pytest.raises(ServerError, match="corrupted"):
        call("download", FILE_ID, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_cut_short_leaves_nothing(scripted: Scripted, call: Any, tmp_path: Path) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
        await response.prepare(request)
        await response.write(DATA[:1000])
        assert request.transport is not None
        request.transport.close()
        return response

    scripted.on("GET", f"/files/{FILE_ID}", cut)
    with pytest.raises(Unreachable):
        call("download", FILE_ID, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_not_found_and_writes_nothing(
    scripted: Scripted, call: Any, tmp_path: Path
) -> None:
    scripted.reply("GET", f"/files/{FILE_ID}", 404, {"error": "not_found", "detail": "no file"})
    with pytest.raises(NotFound):
        call("download", FILE_ID, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_into_a_folder_that_does_not_exist_is_bad_input(
    scripted: Scripted, call: Any, tmp_path: Path
) -> None:
    scripted.on("GET", f"/files/{FILE_ID}", download_of(b"abc"))
    with pytest.raises(BadInput, match="cannot write there"):
        call("download", FILE_ID, tmp_path / "absent" / "x.csv")


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ("attachment; filename=\"a.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
        ('attachment; filename="plain.txt"', "plain.txt"),
        ("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ('attachment; filename="..\\\\boot.ini"', "boot.ini"),
        ("attachment; filename*=UTF-8''..", FILE_ID),
        ("", FILE_ID),
    ],
)
def test_a_downloaded_files_name_never_leaves_its_folder(disposition: str, name: str) -> None:
    assert name_of(disposition, FILE_ID) == name


def test_listing_deleting_and_urls_of_files(scripted: Scripted, call: Any) -> None:
    listed = {"files": [stored(b"x", "a.txt", "text/plain")], "count": 1, "next_page_token": None}
    scripted.reply("GET", "/files", 200, listed)
    scripted.reply("DELETE", f"/files/{FILE_ID}", 204)
    url = {"url": "http://s3.example/x?sig=1", "expires_at": "2026-12-01T12:15:00Z"}
    scripted.reply("GET", f"/files/{FILE_ID}/url", 200, url)
    page = call("files", limit=5, page_token=FILE_ID, owner="acme/ann")
    assert page.files[0].name == "a.txt"
    assert scripted.requests("GET", "/files")[0].query == {
        "limit": "5",
        "page_token": FILE_ID,
        "owner": "acme/ann",
    }
    assert call("delete_file", FILE_ID) is None
    assert call("file_url", FILE_ID, expires_s=60).url == url["url"]
    assert scripted.requests("GET", f"/files/{FILE_ID}/url")[0].query == {"expires_s": "60"}


def test_keys_and_task_calls_send_what_the_gateway_takes(scripted: Scripted, call: Any) -> None:
    key = {
        "key_id": "0123456789ab",
        "name": "ann",
        "tenant": "acme",
        "role": "client",
        "principal_id": "acme/ann",
        "created_at": "2026-12-01T12:00:00",
        "revoked_at": None,
    }
    scripted.reply("POST", "/admin/keys", 201, {**key, "key": "wak_0123456789ab_secret"})
    scripted.reply("GET", "/admin/keys", 200, {"keys": [key], "count": 1})
    scripted.reply("DELETE", "/admin/keys/0123456789ab", 200, {**key, "revoked_at": "now"})
    assert call("create_key", "ann", "acme").key == "wak_0123456789ab_secret"
    assert json.loads(scripted.requests("POST", "/admin/keys")[0].body) == {
        "name": "ann",
        "tenant": "acme",
        "role": "client",
    }
    assert call("keys").keys[0].principal_id == "acme/ann"
    assert call("revoke_key", "0123456789ab").revoked_at == "now"
    scripted.reply("GET", "/tasks", 200, {"tasks": [], "count": 0, "next_page_token": None})
    call("tasks", status="error", limit=3, page_token="task_20261201120000_0123abcd")
    assert scripted.requests("GET", "/tasks")[0].query == {
        "limit": "3",
        "status": "error",
        "page_token": "task_20261201120000_0123abcd",
    }
