"""The Range header of a download: which ranges are served, ignored or unsatisfiable."""

from __future__ import annotations

import pytest

from common.errors import RangeNotSatisfiable
from gateway import ranges
from gateway.ranges import MAX_OFFSET, Asked


@pytest.mark.parametrize(
    ("header", "asked"),
    [
        ("bytes=0-99", Asked(0, 99)),
        ("bytes=100-", Asked(100, None)),
        ("bytes=-500", Asked(suffix=500)),
        ("bytes=-0", Asked(suffix=0)),
        ("  bytes=5-5 ", Asked(5, 5)),
        (f"bytes={10**30}-", Asked(MAX_OFFSET, None)),
        (f"bytes=0-{10**30}", Asked(0, MAX_OFFSET)),
        (f"bytes=-{10**30}", Asked(suffix=MAX_OFFSET)),
    ],
)
def test_one_range_is_read(header: str, asked: Asked) -> None:
    assert ranges.parse(header) == asked


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-1,5-6",  # several ranges: the whole file
        "bytes=9-3",  # last before first: invalid
        "items=0-9",  # another unit
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes 0-9",
        "bytes=0-9 trailing",
        "bytes=-5-",
    ],
)
def test_anything_else_is_ignored(header: str | None) -> None:
    assert ranges.parse(header) is None


@pytest.mark.parametrize(
    ("size", "asked", "served"),
    [
        (1000, None, (0, 999)),
        (0, None, (0, -1)),
        (1000, Asked(0, 99), (0, 99)),
        (1000, Asked(900, 5000), (900, 999)),
        (1000, Asked(999, None), (999, 999)),
        (1000, Asked(suffix=10), (990, 999)),
        (10, Asked(suffix=500), (0, 9)),
    ],
)
def test_a_range_is_resolved_against_the_size(
    size: int, asked: Asked | None, served: tuple[int, int]
) -> None:
    assert ranges.resolve(size, asked) == served


@pytest.mark.parametrize(
    ("size", "asked"),
    [
        (1000, Asked(1000, None)),
        (1000, Asked(5000, 6000)),
        (1000, Asked(suffix=0)),
        (0, Asked(0, None)),
        (0, Asked(suffix=3)),
    ],
)
def test_a_range_missing_the_file_is_unsatisfiable_and_names_the_size(
    size: int, asked: Asked
) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        ranges.resolve(size, asked)

    assert caught.value.size == size
    assert (caught.value.http_status, caught.value.code) == (416, "range_not_satisfiable")


def test_content_range_names_first_last_and_size() -> None:
    assert ranges.content_range(0, 99, 1000) == "bytes 0-99/1000"
