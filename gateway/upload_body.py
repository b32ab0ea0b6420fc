"""The body of a file upload, read as a stream: never whole, never spooled to disk.

``POST /files`` takes either the raw bytes of the file (its name in ``X-Filename``, its type in
``Content-Type``) or a ``multipart/form-data`` form whose one file part is the file. Either way
the body arrives as an async iterator of byte chunks and leaves as one, so the bytes go on to
storage_svc as they come:

- :func:`limited` counts the bytes and stops with :class:`~common.errors.TooLarge` the moment
  the count passes the limit;
- :func:`form_file` drives python-multipart's streaming parser over the chunks: it reads up to
  the file part's headers (which name the file), then hands out the part's data as views into
  the chunks the parser was given (no copy) while it goes on parsing, so a form that turns out
  malformed, or that carries a second file, fails the upload before it is stored. Fields other
  than the file are read and ignored.

Names and types are checked here with the rules storage_svc applies (which checks them again):
a name of 1-255 characters without ``/`` or control characters, a ``type/subtype`` MIME type.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from common.errors import InvalidInput, TooLarge
from gateway.models import CONTENT_TYPE_CHARS, DEFAULT_CONTENT_TYPE, FILE_NAME_CHARS

_NAME = re.compile(FILE_NAME_CHARS)
_CONTENT_TYPE = re.compile(CONTENT_TYPE_CHARS)
MAX_CONTENT_TYPE = 255


def form_request_body(description: str) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that takes one file as a ``multipart/form-data``
    form with a ``file`` part (``openapi_extra``); ``description`` says what file."""
    schema = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}},
    }
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


STALLED = (
    "The body stalled: nothing of it came for `GATEWAY_BODY_IDLE_TIMEOUT_S` seconds; the upload "
    "is cancelled and nothing of it kept (`request_timeout`)"
)
"""The OpenAPI description of an upload's 408 (``gateway.app.BodyGuard``)."""


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"file larger than the limit of {limit} bytes")


async def limited(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """``chunks`` as they come; TooLarge as soon as more than ``max_bytes`` have come."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > max_bytes:
            raise too_large(max_bytes)
        if chunk:
            yield chunk


def check_name(name: str, where: str) -> str:
    """A file name as storage keeps it; InvalidInput naming ``where`` otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{where}: a file name has 1 to 255 characters, none of them '/' or a control character"
        )
    return name


def check_content_type(value: str, where: str) -> str:
    """A MIME type as storage keeps it (empty: ``application/octet-stream``)."""
    value = value.strip()
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_CONTENT_TYPE or not _CONTENT_TYPE.fullmatch(value):
        raise InvalidInput(f"{where}: {value[:80]!r} is not a MIME type like text/csv")
    return value


def _utf8(text: str) -> str:
    """Header text the server decoded as latin-1, read as the UTF-8 a client most likely sent
    (unchanged when it is not UTF-8)."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def header_name(value: str) -> str:
    """The file name an ``X-Filename`` header gives: percent-encoded UTF-8 (``r%C3%A9sum%C3%A9
    .pdf``) or plain text; checked."""
    try:
        name = urllib.parse.unquote(_utf8(value), errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput("X-Filename: percent-encoded bytes that are not UTF-8") from None
    return check_name(name, "X-Filename")


def is_form(content_type: str) -> bool:
    """Whether a request's Content-Type is ``multipart/form-data``."""
    essence, _ = parse_options_header(content_type)
    return essence == b"multipart/form-data"


@dataclass(frozen=True)
class FormFile:
    """The file part of a form: its name and type."""

    name: str
    content_type: str


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    file: FormFile | None = None


class _Reader:
    """Feeds body chunks to the streaming parser and sorts what it finds."""

    def __init__(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._part = _Part()
        self._field = bytearray()
        self._value = bytearray()
        self.file: FormFile | None = None  # the file part, once its headers are read
        self.data: list[memoryview] = []  # the file's data found in the last chunk
        self.ended = False
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_end": self._end,
                },
            )
        except FormParserError as exc:
            raise InvalidInput(f"multipart/form-data: {exc}") from None

    async def feed(self) -> bool:
        """Parses the next chunk of the body; False once the body has ended."""
        chunk = await anext(self._body, None)
        if chunk is None:
            return False
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidInput(f"multipart/form-data: malformed body: {exc}") from None
        return True

    def _begin(self) -> None:
        self._part = _Part()

    # The parser bounds the headers of a part (count and line length).
    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._part.headers.get(b"content-disposition", b"").decode("latin-1")
        _, options = parse_options_header(disposition)
        if b"filename" not in options:
            return  # a plain field: read and ignored
        if self.file is not None:
            raise InvalidInput("multipart/form-data: one file per request; this form has more")
        raw = options[b"filename"].decode("latin-1")
        # Browsers send the name as UTF-8 and escape only '"' (as %22).
        name = check_name(_utf8(raw).replace("%22", '"'), "multipart/form-data: filename")
        content_type = self._part.headers.get(b"content-type", b"").decode("latin-1")
        checked = check_content_type(content_type, "multipart/form-data: the file's Content-Type")
        self.file = self._part.file = FormFile(name, checked)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.file is not None:
            self.data.append(memoryview(data)[start:end])

    def _end(self) -> None:
        self.ended = True


def check_extension(name: str, extensions: Sequence[str], only: str) -> str:
    """``name`` when its extension (any case) is one of ``extensions``; InvalidInput otherwise,
    saying ``file '<name>': only <only>``."""
    if PurePath(name).suffix.lower() not in extensions:
        raise InvalidInput(f"file {name!r}: only {only}")
    return name


def boundary_of(content_type: str) -> bytes:
    """The boundary a ``multipart/form-data`` Content-Type names; InvalidInput without one."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("Content-Type: multipart/form-data needs a boundary parameter")
    return boundary


async def form_upload(
    headers: Mapping[str, str], stream: AsyncIterator[bytes], max_bytes: int
) -> tuple[FormFile, AsyncIterator[memoryview]]:
    """The file part of a request's ``multipart/form-data`` body (its headers and byte stream)
    and its data as it comes, at most ``max_bytes`` of body: InvalidInput for any other body,
    TooLarge for a declared or streamed body over the limit."""
    content_type = headers.get("content-type", "")
    if not is_form(content_type):
        raise InvalidInput("send the file as multipart/form-data with a `file` part")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    return await form_file(content_type, limited(stream, max_bytes))


async def form_file(
    content_type: str, body: AsyncIterator[bytes]
) -> tuple[FormFile, AsyncIterator[memoryview]]:
    """Reads ``body`` (a ``multipart/form-data`` form) up to its file part; the part's name and
    type, and its data as it comes. The data ends once the whole form has been read and found
    well-formed; InvalidInput (raised by the data) otherwise, or when no part is a file."""
    reader = _Reader(boundary_of(content_type), body)
    while reader.file is None:
        if reader.ended or not await reader.feed():
            raise InvalidInput("multipart/form-data: no file part (a part with a filename)")
    return reader.file, _file_data(reader)


async def _file_data(reader: _Reader) -> AsyncIterator[memoryview]:
    while True:
        found, reader.data = reader.data, []
        for view in found:
            yield view
        if reader.ended:
            # Whatever follows the closing boundary is an epilogue: read and ignored.
            while await reader.feed():
                pass
            return
        if not await reader.feed():
            raise InvalidInput("multipart/form-data: the body ends before the form does")
