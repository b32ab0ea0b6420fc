"""The pure parts of files: ids, ranges, checks, records, key layout, and the sweeper loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from common import file_ids
from common.errors import InvalidInput, TooLarge, Unavailable
from storage_svc import filemeta
from storage_svc.filemeta import ByteRange, FileMeta, Layout
from storage_svc.sweeper import run_sweeper

T0 = datetime(2025, 12, 30, 12, 0, 0, tzinfo=UTC)


def test_file_ids_carry_their_owner_key_and_randomness() -> None:
    first, second = file_ids.new("alice"), file_ids.new("alice")

    assert first != second
    assert file_ids.check(first) == file_ids.owner_key("alice") == file_ids.check(second)
    assert file_ids.owner_key("bob") != file_ids.owner_key("alice")
    assert file_ids.REGEX.match(file_ids.EXAMPLE)
    for bad in ("", "f_abc_def", first + "\n", first.upper(), "task_x", first[:-1]):
        with pytest.raises(InvalidInput):
            file_ids.check(bad)


def test_only_admins_reach_beyond_their_own_keys() -> None:
    alices = file_ids.new("alice")

    assert filemeta.may_reach(filemeta.caller("alice", False), alices)
    assert not filemeta.may_reach(filemeta.caller("bob", False), alices)
    assert filemeta.may_reach(filemeta.caller("bob", True), alices)
    with pytest.raises(InvalidInput):
        filemeta.caller("", True)


@pytest.mark.parametrize(
    ("size", "asked", "served"),
    [
        (10, None, (0, 9)),
        (0, None, (0, -1)),
        (10, ByteRange(0, 0), (0, 0)),
        (10, ByteRange(3), (3, 9)),
        (10, ByteRange(3, 100), (3, 9)),
        (10, ByteRange(9, 9), (9, 9)),
        (10, ByteRange(suffix=3), (7, 9)),
        (10, ByteRange(suffix=30), (0, 9)),
    ],
)
def test_ranges_resolve_to_what_is_served(
    size: int, asked: ByteRange | None, served: tuple[int, int]
) -> None:
    assert filemeta.resolve_range(size, asked) == served


@pytest.mark.parametrize(
    ("size", "asked", "error"),
    [
        (10, ByteRange(10), TooLarge),
        (0, ByteRange(0), TooLarge),
        (0, ByteRange(suffix=1), TooLarge),
        (10, ByteRange(-1), InvalidInput),
        (10, ByteRange(5, 4), InvalidInput),
        (10, ByteRange(suffix=0), InvalidInput),
    ],
)
def test_ranges_outside_the_file_or_malformed_are_refused(
    size: int, asked: ByteRange, error: type[Exception]
) -> None:
    with pytest.raises(error):
        filemeta.resolve_range(size, asked)


def test_names_types_checksums_and_limits() -> None:
    assert filemeta.check_name("résumé (1).pdf") == "résumé (1).pdf"
    for bad in ("", "a/b", "tab\there", "x" * 256, "del\x7f"):
        with pytest.raises(InvalidInput):
            filemeta.check_name(bad)
    assert filemeta.check_content_type("") == "application/octet-stream"
    assert filemeta.check_content_type("text/csv; charset=utf-8") == "text/csv; charset=utf-8"
    for bad in ("text", "/x", "text/plain\r\nX-Evil: 1", "tëxt/plain"):
        with pytest.raises(InvalidInput):
            filemeta.check_content_type(bad)
    assert filemeta.check_sha256("AB" * 32) == "ab" * 32
    assert filemeta.check_sha256("") == ""
    with pytest.raises(InvalidInput):
        filemeta.check_sha256("abc")
    assert filemeta.size_limit(0, 100) == 100
    assert filemeta.size_limit(10, 100) == 10
    assert filemeta.size_limit(1000, 100) == 100
    with pytest.raises(InvalidInput):
        filemeta.size_limit(-1, 100)


def test_records_round_trip_and_expire_at_their_time() -> None:
    meta = FileMeta(
        file_id=file_ids.new("alice"),
        owner="alice",
        name="naïve.txt",
        content_type="text/plain",
        size=3,
        sha256="0" * 64,
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
        temporary=True,
    )

    assert filemeta.decode(filemeta.encode(meta)) == meta
    assert not meta.expired(T0 + timedelta(hours=23, minutes=59, seconds=59))
    assert meta.expired(T0 + timedelta(hours=24))
    with pytest.raises(ValueError):
        filemeta.decode(b'{"v": 99}')


def test_layout_keys_and_reading_ids_back() -> None:
    layout = Layout("files/")
    file_id = file_ids.new("alice")
    key = file_ids.owner_key("alice")

    assert layout.data_key(file_id) == f"files/data/{key}/{file_id}"
    assert layout.meta_key(file_id) == f"files/meta/{key}/{file_id}.json"
    assert layout.meta_prefix(key) == f"files/meta/{key}/"
    assert layout.meta_prefix(None) == "files/meta/"
    assert layout.file_id_of(layout.meta_key(file_id)) == file_id
    assert layout.file_id_of(layout.data_key(file_id)) is None
    assert layout.file_id_of(f"files/meta/{'0' * 32}/{file_id}.json") is None
    assert layout.file_id_of("files/meta/x/junk.json") is None


async def test_the_sweeper_keeps_going_after_a_failed_sweep() -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def sweep() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise Unavailable("S3 down")
        if len(calls) == 2:
            raise RuntimeError("bug")
        done.set()
        return 0

    task = asyncio.create_task(run_sweeper(sweep, 0.01))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(calls) >= 3
