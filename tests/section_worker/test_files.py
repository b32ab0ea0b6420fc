"""The worker's file client against a real storage_svc on loopback (over moto): streamed writes
and reads, ranges, ownership, and the checks that storage serves the file a job was given."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from common import file_ids
from common.errors import NotFound, TooLarge
from section_worker.files import FileClient, FileMismatch, FileRef

OWNER = "acme/alice"
MIB = 1024 * 1024


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(files: FileClient, ref: FileRef, owner: str = OWNER, **span: int) -> bytes:
    return b"".join([chunk async for chunk in files.open(ref, owner, **span)])


async def test_a_written_file_reads_back_whole_and_in_ranges(file_client: FileClient) -> None:
    data = os.urandom(2 * MIB + 123)  # a chunk bigger than one message, split on the way

    ref = await file_client.write(OWNER, "data.bin", "", chunks_of(data[:10], data[10:]))

    assert ref.name == "data.bin"
    assert ref.content_type == "application/octet-stream"
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert ref.key == f"files/data/{file_ids.owner_key(OWNER)}/{ref.file_id}"
    assert await read(file_client, ref) == data
    assert await read(file_client, ref, start=MIB, end=MIB + 9) == data[MIB : MIB + 10]
    assert await read(file_client, ref, start=len(data) - 5) == data[-5:]
    chunks = [len(chunk) async for chunk in file_client.open(ref, OWNER)]
    assert max(chunks) <= MIB


async def test_another_owners_file_and_a_range_past_the_end_are_refused(
    file_client: FileClient,
) -> None:
    ref = await file_client.write(OWNER, "a.txt", "text/plain", chunks_of(b"abc"))

    with pytest.raises(NotFound, match=ref.file_id):
        await read(file_client, ref, owner="acme/bob")
    with pytest.raises(TooLarge):
        await read(file_client, ref, start=3)


async def test_a_file_that_is_not_the_one_the_job_was_given_is_refused(
    file_client: FileClient,
) -> None:
    ref = await file_client.write(OWNER, "a.txt", "text/plain", chunks_of(b"abc"))

    with pytest.raises(FileMismatch, match="it has 3 bytes, the job says 4"):
        await read(file_client, dataclasses.replace(ref, size=4))
    with pytest.raises(FileMismatch, match="under another key"):
        await read(file_client, dataclasses.replace(ref, key="files/data/elsewhere"))
    with pytest.raises(FileMismatch, match="do not match its SHA-256"):
        await read(file_client, dataclasses.replace(ref, sha256="0" * 64))


async def test_a_reader_that_stops_early_ends_the_stream(file_client: FileClient) -> None:
    data = os.urandom(3 * MIB)
    ref = await file_client.write(OWNER, "big.bin", "", chunks_of(data))

    stream = file_client.open(ref, OWNER)
    first = await anext(stream)
    await stream.aclose()

    assert first == data[: len(first)]
    assert await read(file_client, ref, start=0, end=9) == data[:10]  # the channel still works
