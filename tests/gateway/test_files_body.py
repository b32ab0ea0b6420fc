"""The body of a file upload read as a stream: the size limit, names and types, and a
multipart/form-data form parsed as it arrives."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from common.errors import InvalidInput, TooLarge
from gateway import upload_body
from gateway.upload_body import FormFile

BOUNDARY = "----form7MA4YWxkTrZu0gW"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def part(name: str, body: bytes, filename: str | None = None, content_type: str = "") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + body + b"\r\n"


def form(*parts: bytes, epilogue: bytes = b"") -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode() + epilogue


async def read_form(body: bytes, chunk: int) -> tuple[FormFile, bytes]:
    found, data = await upload_body.form_file(FORM_TYPE, chunks_of(body, chunk))
    return found, b"".join([bytes(view) async for view in data])


async def test_limited_passes_bytes_up_to_the_limit_and_stops_right_after() -> None:
    data = b"x" * 100

    assert b"".join([c async for c in upload_body.limited(chunks_of(data, 7), 100)]) == data
    seen = []
    with pytest.raises(TooLarge, match="limit of 99 bytes"):
        async for chunk in upload_body.limited(chunks_of(data, 10), 99):
            seen.append(chunk)
    assert sum(map(len, seen)) == 90  # the chunk that passes the limit is never handed on


async def test_limited_drops_empty_chunks() -> None:
    async def with_empties() -> AsyncIterator[bytes]:
        for chunk in (b"", b"ab", b"", b"c"):
            yield chunk

    assert [c async for c in upload_body.limited(with_empties(), 10)] == [b"ab", b"c"]


@pytest.mark.parametrize("name", ["a", "report é.pdf", "x" * 255, "日本語.csv", "a\\b"])
def test_names_storage_keeps_are_accepted(name: str) -> None:
    assert upload_body.check_name(name, "where") == name


@pytest.mark.parametrize("name", ["", "x" * 256, "a/b", "a\nb", "tab\there", "del\x7f"])
def test_other_names_are_refused_naming_where(name: str) -> None:
    with pytest.raises(InvalidInput, match=r"^where: a file name"):
        upload_body.check_name(name, "where")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("", "application/octet-stream"),
        ("  ", "application/octet-stream"),
        ("text/csv", "text/csv"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        (" application/vnd.ms-excel ", "application/vnd.ms-excel"),
    ],
)
def test_mime_types_are_kept(value: str, kept: str) -> None:
    assert upload_body.check_content_type(value, "Content-Type") == kept


@pytest.mark.parametrize(
    "value", ["text", "/plain", "text/", "te xt/plain", "text/plain; é", "a/" + "b" * 260]
)
def test_other_types_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"^Content-Type: .* is not a MIME type"):
        upload_body.check_content_type(value, "Content-Type")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("plain.txt", "plain.txt"),
        ("r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
        ("50%.txt", "50%.txt"),
        ("a%20b", "a b"),
        # Raw UTF-8 bytes, as the server decodes header bytes (latin-1).
        ("résumé.pdf".encode().decode("latin-1"), "résumé.pdf"),
        ("caf\xe9.txt", "caf\xe9.txt"),  # latin-1 that is not UTF-8: kept as it came
    ],
)
def test_x_filename_is_plain_or_percent_encoded_utf8(header: str, name: str) -> None:
    assert upload_body.header_name(header) == name


@pytest.mark.parametrize(
    ("header", "problem"),
    [("%FF%FE.bin", "not UTF-8"), ("a%2Fb", "a file name"), ("%0A", "a file name")],
)
def test_x_filename_decoding_to_a_bad_name_is_refused(header: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^X-Filename: .*{problem}"):
        upload_body.header_name(header)


@pytest.mark.parametrize(
    ("content_type", "form_"),
    [
        (FORM_TYPE, True),
        ("Multipart/Form-Data; boundary=x", True),
        ("multipart/mixed; boundary=x", False),
        ("application/octet-stream", False),
        ("", False),
    ],
)
def test_a_form_is_told_by_its_content_type(content_type: str, form_: bool) -> None:
    assert upload_body.is_form(content_type) is form_


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
async def test_the_file_part_of_a_form_streams_out_whatever_the_chunking(chunk: int) -> None:
    data = os.urandom(3000) + f"\r\n--{BOUNDARY}".encode()[:-1] + os.urandom(100)
    body = form(
        part("note", b"ignored field"),
        part("file", data, filename="prices.csv", content_type="text/csv"),
        part("after", b"ignored too"),
        epilogue=b"an epilogue, ignored",
    )

    found, back = await read_form(body, chunk)

    assert found == FormFile("prices.csv", "text/csv")
    assert back == data


async def test_a_file_part_without_a_type_is_octet_stream_and_utf8_names_are_read() -> None:
    body = form(part("file", b"abc", filename="r\u00e9sum\u00e9 %22q%22.txt"))

    found, back = await read_form(body, 5)

    assert found == FormFile('résumé "q".txt', "application/octet-stream")
    assert back == b"abc"


async def test_an_empty_file_part_is_an_empty_file() -> None:
    found, back = await read_form(form(part("file", b"", filename="empty")), 10)

    assert (found.name, back) == ("empty", b"")


async def test_a_form_without_a_file_part_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no file part"):
        await read_form(form(part("file", b"not a file: no filename")), 16)


async def test_an_empty_body_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no file part"):
        await read_form(b"", 16)


async def test_a_second_file_fails_the_upload_after_the_first_streamed() -> None:
    body = form(part("a", b"one", filename="1.txt"), part("b", b"two", filename="2.txt"))

    with pytest.raises(InvalidInput, match="one file per request"):
        await read_form(body, 8)


async def test_a_form_cut_short_fails_the_upload() -> None:
    body = form(part("file", b"x" * 500, filename="f.bin"))[:-60]

    with pytest.raises(InvalidInput, match="ends before the form does"):
        await read_form(body, 50)


async def test_a_malformed_form_is_refused() -> None:
    body = b"--" + BOUNDARY.encode() + b"\r\nno colon in this header line\r\n\r\nx\r\n"

    with pytest.raises(InvalidInput, match="malformed body"):
        await read_form(body, 64)


async def test_a_bad_name_or_type_in_the_file_part_is_refused() -> None:
    with pytest.raises(InvalidInput, match="filename: a file name"):
        await read_form(form(part("file", b"x", filename="a/b")), 64)
    with pytest.raises(InvalidInput, match="the file's Content-Type"):
        await read_form(form(part("file", b"x", filename="a", content_type="nonsense")), 64)


async def test_part_headers_are_bounded() -> None:
    body = form(part("file", b"x", filename="a", content_type="text/plain; p=" + "v" * 9000))

    with pytest.raises(InvalidInput, match="malformed body: Maximum header size exceeded"):
        await read_form(body, 1024)


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; b=1"])
async def test_a_form_without_a_boundary_is_refused(content_type: str) -> None:
    with pytest.raises(InvalidInput, match="needs a boundary"):
        await upload_body.form_file(content_type, chunks_of(b"", 1))


async def test_an_overlong_boundary_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"multipart/form-data: .*oundary"):
        await upload_body.form_file("multipart/form-data; boundary=" + "b" * 300, chunks_of(b"", 1))
