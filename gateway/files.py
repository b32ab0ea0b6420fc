"""The REST file API (SPEC §9): ``/files`` routes over storage_svc's FileService.

Thin adapters: each route reads the request, calls :class:`~gateway.file_client.FileClient` on
behalf of the caller's principal, and shapes the answer. Files are owned like tasks: storage_svc
answers another owner's file exactly as a missing one (404), and admins reach every file.

- ``POST /files`` streams the body (raw, or a ``multipart/form-data`` form parsed as a stream,
  :mod:`gateway.upload_body`) into the upload as it arrives; the body limit of the other routes
  does not apply, ``GATEWAY_FILE_MAX_BYTES`` does: a declared ``Content-Length`` above it is
  413 before anything is read, and a body that grows past it is 413 the moment it does, its
  upload cancelled (storage_svc aborts it). A client that goes away mid-upload cancels it too.
- ``GET /files/{id}`` streams the file from storage_svc into the answer; one byte range
  (:mod:`gateway.ranges`) answers 206, a range that misses the file 416, anything else in
  ``Range`` is ignored (200, the whole file). ``HEAD`` answers the same headers from the
  metadata alone, reading no byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect

from common import file_ids
from common.errors import (
    Forbidden,
    InvalidInput,
    RangeNotSatisfiable,
    error_body,
    http_error_body,
)
from common.principals import Principal
from gateway import auth, ranges, upload_body
from gateway.file_client import FileClient, FileInfo, NewFile
from gateway.models import (
    DEFAULT_CONTENT_TYPE,
    ErrorResponse,
    FileListResponse,
    FileOut,
    FileUrlResponse,
    PresignRequest,
    PresignResponse,
)
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

TAGS: list[str | Enum] = ["files"]
FileId = Annotated[str, Path(pattern=file_ids.PATTERN, examples=[file_ids.EXAMPLE])]


class _FileIdConvertor(Convertor[str]):
    """Routes ``/files/{file_id:file_id}`` only for what has the form of a file id, so
    ``/files/presign`` is never taken for one (a GET of it is 405, not a 422 about the id)."""

    regex = file_ids.PATTERN.removeprefix("^").removesuffix("$")

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("file_id", _FileIdConvertor())
Caller = Annotated[Principal, Depends(auth.current_principal)]


def _errors(**extra: str) -> dict[int | str, dict[str, Any]]:
    texts = {
        "401": "No API key, or an unknown or revoked one (`unauthenticated`)",
        "404": "No such file, another owner's, or expired (`not_found`)",
        "422": "Invalid input: which field and why (`invalid_input`)",
        "503": "storage_svc or S3 is down (`unavailable`)",
        "504": "storage_svc did not answer in time (`timeout`)",
        **extra,
    }
    return {
        int(code): {"model": ErrorResponse, "description": text} for code, text in texts.items()
    }


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_HEADERS = {
    "Content-Length": {"schema": {"type": "integer"}, "description": "Bytes in the answer."},
    "Content-Disposition": {
        "schema": {"type": "string"},
        "description": "`attachment` with the file's name (RFC 6266 `filename*`).",
    },
    "ETag": {"schema": {"type": "string"}, "description": "The SHA-256, quoted, when known."},
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
}
_RANGE_HEADERS = {
    **_FILE_HEADERS,
    "Content-Range": {
        "schema": {"type": "string"},
        "description": "`bytes <first>-<last>/<size>`",
    },
}
_UNSATISFIABLE = {
    "model": ErrorResponse,
    "description": "The range misses the file (`range_not_satisfiable`)",
    "headers": {"Content-Range": {"schema": {"type": "string"}, "description": "`bytes */<size>`"}},
}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_errors(),
    200: {
        "description": "The whole file, in its own content type.",
        "content": {"*/*": _BINARY},
        "headers": _FILE_HEADERS,
    },
    206: {
        "description": "The byte range asked for.",
        "content": {"*/*": _BINARY},
        "headers": _RANGE_HEADERS,
    },
    416: _UNSATISFIABLE,
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file: its raw bytes (name in `X-Filename`, type in `Content-Type`), "
        "or a multipart/form-data form whose one file part (a part with a filename) is the "
        "file, its type that part's Content-Type. Other form fields are ignored.",
        "content": {
            "application/octet-stream": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}

RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        max_length=200,
        description="`bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix length>`: one "
        "range, answered 206; several ranges or a malformed header are ignored (200).",
    ),
]


def file_out(info: FileInfo) -> FileOut:
    return FileOut(
        file_id=info.file_id,
        name=info.name,
        size=info.size,
        sha256=info.sha256,
        content_type=info.content_type,
        created_at=info.created_at,
        expires_at=info.expires_at,
        temporary=info.temporary,
        owner=info.owner,
    )


def disposition(name: str) -> str:
    """``Content-Disposition: attachment`` naming the file (RFC 6266): an ASCII stand-in for
    old clients, and the exact name as percent-encoded UTF-8."""
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_headers(info: FileInfo, start: int, end: int, ranged: bool) -> dict[str, str]:
    """The headers of a download of ``start``-``end`` (inclusive) of ``info``'s file."""
    headers = {
        "Content-Type": info.content_type,
        "Content-Length": str(end - start + 1),
        "Content-Disposition": disposition(info.name),
        "Accept-Ranges": "bytes",
    }
    if info.sha256:
        headers["ETag"] = f'"{info.sha256}"'
    if ranged:
        headers["Content-Range"] = ranges.content_range(start, end, info.size)
    return headers


def install(app: FastAPI, settings: GatewaySettings, client: Callable[[], FileClient]) -> None:
    """Adds the file routes (and the answers of their own errors) to ``app``'s own router, so
    they are its routes like any other; ``client`` gives the FileClient of the running app."""
    router = app.router
    limit = settings.file_max_bytes

    @router.post(
        "/files",
        tags=TAGS,
        status_code=201,
        response_model=FileOut,
        responses={
            **_errors(
                **{
                    "408": upload_body.STALLED,
                    "413": f"The file is larger than the limit ({limit} bytes) (`too_large`)",
                }
            ),
            201: {
                "description": "Stored; `Location` is the file's URL.",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
        },
        openapi_extra=_UPLOAD_BODY,
    )
    async def upload(
        request: Request,
        response: Response,
        principal: Caller,
        temporary: Annotated[
            bool,
            Query(description="A temporary input of a task: deleted right after the task ends."),
        ] = False,
        x_filename: Annotated[
            str | None,
            Header(
                alias="X-Filename",
                max_length=1024,
                description="The file's name, for a raw body (required then); percent-encoded "
                "UTF-8 is decoded (`r%C3%A9sum%C3%A9.pdf`).",
            ),
        ] = None,
    ) -> FileOut:
        """Uploads a file, streamed to S3 as it arrives (never held whole)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise upload_body.too_large(limit)
        content_type = request.headers.get("content-type", "")
        body = upload_body.limited(request.stream(), limit)
        if upload_body.is_form(content_type):
            part, data = await upload_body.form_file(content_type, body)
            new = NewFile(part.name, part.content_type, temporary, limit)
            info = await client().upload(principal, new, data)
        else:
            if not x_filename:
                raise InvalidInput("X-Filename: required with a raw body: the file's name")
            name = upload_body.header_name(x_filename)
            kind = upload_body.check_content_type(content_type, "Content-Type")
            info = await client().upload(principal, NewFile(name, kind, temporary, limit), body)
        response.headers["Location"] = f"/files/{info.file_id}"
        return file_out(info)

    @router.get(
        "/files/{file_id:file_id}",
        tags=TAGS,
        response_class=StreamingResponse,
        responses=_READ_RESPONSES,
    )
    async def download(file_id: FileId, principal: Caller, range_: RangeHeader = None) -> Response:
        """Downloads a file, streamed from S3; `Range` reads one byte range of it."""
        asked = ranges.parse(range_)
        opened = await client().download(principal, file_id, asked)
        headers = file_headers(opened.info, opened.start, opened.end, asked is not None)
        return StreamingResponse(
            opened.chunks(), status_code=206 if asked else 200, headers=headers
        )

    @router.head(
        "/files/{file_id:file_id}", tags=TAGS, response_class=Response, responses=_READ_RESPONSES
    )
    async def head(file_id: FileId, principal: Caller, range_: RangeHeader = None) -> Response:
        """The headers a download would answer with, from the file's metadata (no byte read)."""
        asked = ranges.parse(range_)
        info = await client().meta(principal, file_id)
        start, end = ranges.resolve(info.size, asked)
        headers = file_headers(info, start, end, asked is not None)
        return Response(status_code=206 if asked else 200, headers=headers)

    @router.get(
        "/files/{file_id:file_id}/url",
        tags=TAGS,
        response_model=FileUrlResponse,
        responses=_errors(),
    )
    async def url(
        file_id: FileId,
        principal: Caller,
        expires_s: Annotated[
            int | None,
            Query(
                ge=1,
                le=604_800,
                description="Validity in seconds (default 15 minutes; capped at storage's "
                "maximum, 1 hour by default, and at the file's own expiry).",
            ),
        ] = None,
    ) -> FileUrlResponse:
        """A URL that downloads the file straight from S3, until `expires_at`."""
        signed = await client().presign_get(principal, file_id, expires_s or 0)
        return FileUrlResponse(url=signed.url, expires_at=signed.expires_at)

    @router.get(
        "/files",
        tags=TAGS,
        response_model=FileListResponse,
        responses=_errors(**{"403": "`owner` from a client: admins only (`forbidden`)"}),
    )
    async def list_files(
        principal: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        page_token: Annotated[
            str | None,
            Query(
                pattern=file_ids.PATTERN,
                description="next_page_token of the page before (the id of its last file).",
            ),
        ] = None,
        owner: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                description="Admins only: the files of this principal id (403 for a client).",
            ),
        ] = None,
    ) -> FileListResponse:
        """The caller's files (an admin's: everyone's, or `owner`'s), in file id order, expired
        ones left out; pass `next_page_token` back as `page_token` for more."""
        if owner and not principal.admin:
            raise Forbidden("owner: only admins may list another principal's files")
        found, token = await client().list(principal, limit, page_token or "", owner)
        files = [file_out(info) for info in found]
        return FileListResponse(files=files, count=len(files), next_page_token=token or None)

    @router.delete(
        "/files/{file_id:file_id}",
        tags=TAGS,
        status_code=204,
        response_class=Response,
        responses={**_errors(), 204: {"description": "Deleted."}},
    )
    async def delete(file_id: FileId, principal: Caller) -> Response:
        """Deletes a file: its bytes and its metadata."""
        await client().delete(principal, file_id)
        return Response(status_code=204)

    @router.post(
        "/files/presign",
        tags=TAGS,
        response_model=PresignResponse,
        responses=_errors(**{"413": f"`size` over the limit ({limit} bytes) (`too_large`)"}),
    )
    async def presign(body: PresignRequest, principal: Caller) -> PresignResponse:
        """Reserves a file and signs a PUT of its bytes straight to S3, with the headers the
        PUT must carry; `POST /files/{file_id}/complete` afterwards records the file."""
        if body.size > limit:
            raise upload_body.too_large(limit)
        new = NewFile(body.name, body.content_type or DEFAULT_CONTENT_TYPE, body.temporary)
        signed = await client().presign_put(
            principal, new, body.size, (body.sha256 or "").lower(), body.expires_s or 0
        )
        return PresignResponse(
            file_id=signed.file_id,
            url=signed.url,
            headers=signed.headers,
            expires_at=signed.expires_at,
        )

    @router.post(
        "/files/{file_id:file_id}/complete",
        tags=TAGS,
        response_model=FileOut,
        responses=_errors(
            **{
                "409": "Nothing was PUT to the URL yet (`wrong_state`)",
                "422": "The bytes PUT are not what was signed for; they are deleted "
                "(`invalid_input`)",
            }
        ),
    )
    async def complete(file_id: FileId, principal: Caller) -> FileOut:
        """Records a file PUT through a pre-signed URL (again: the same answer)."""
        return file_out(await client().complete(principal, file_id))

    async def unsatisfiable(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RangeNotSatisfiable)
        return JSONResponse(
            status_code=error.http_status,
            content=error_body(error),
            headers={"Content-Range": f"bytes */{error.size}"},
        )

    async def client_gone(request: Request, _: Exception) -> Response:
        # Nobody reads this answer; the upload it was sending is cancelled by now.
        logger.info("%s %s: the client went away", request.method, request.url.path)
        return JSONResponse(status_code=400, content=http_error_body(400, "client went away"))

    app.add_exception_handler(RangeNotSatisfiable, unsatisfiable)
    app.add_exception_handler(ClientDisconnect, client_gone)
