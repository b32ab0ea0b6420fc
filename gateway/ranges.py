"""The ``Range`` header of a file download (RFC 9110 §14): parsed, and resolved against a size.

Pure functions, no I/O. One range is served: ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``.
Whatever else a client sends is ignored and the whole file is served with 200, as RFC 9110
lets a server do: another unit, a header that does not parse, an invalid range (``b`` before
``a``), and several ranges at once (``bytes=0-9,20-29``: a multipart/byteranges answer would
cost one S3 read per range for what clients rarely ask). A range that parses but misses the
file (it starts at or past the end, ``bytes=-0``, any range of an empty file) is
:class:`~common.errors.RangeNotSatisfiable`: 416 with ``Content-Range: bytes */<size>``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from common.errors import RangeNotSatisfiable

# Offsets cross gRPC as int64: larger ones are clamped (a start there is past any file).
MAX_OFFSET = 2**63 - 1
_SPEC = re.compile(r"bytes=(?:(\d+)-(\d*)|-(\d+))")


class Asked(NamedTuple):
    """One byte range as a client asked for it: ``start``-``end`` inclusive (``end`` None: to
    the end of the file), or the last ``suffix`` bytes (``start`` then unused)."""

    start: int = 0
    end: int | None = None
    suffix: int | None = None


def parse(header: str | None) -> Asked | None:
    """The one range ``header`` asks for; None when it asks for none the server serves
    (absent, another unit, malformed, invalid, several ranges): the whole file."""
    if header is None:
        return None
    match = _SPEC.fullmatch(header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        return Asked(suffix=min(int(suffix), MAX_OFFSET))
    start = min(int(first), MAX_OFFSET)
    end = min(int(last), MAX_OFFSET) if last else None
    if end is not None and end < start:
        return None
    return Asked(start, end)


def resolve(size: int, asked: Asked | None) -> tuple[int, int]:
    """The inclusive byte range served of a file of ``size`` bytes (``(0, -1)``: an empty
    file read whole). RangeNotSatisfiable when ``asked`` misses the file."""
    if asked is None:
        return 0, size - 1
    if asked.suffix is not None:
        if asked.suffix == 0 or size == 0:
            raise unsatisfiable(size)
        return max(0, size - asked.suffix), size - 1
    if asked.start >= size:
        raise unsatisfiable(size)
    end = size - 1 if asked.end is None else min(asked.end, size - 1)
    return asked.start, end


def unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"range not satisfiable: the file has {size} bytes", size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` of a 206 answer."""
    return f"bytes {start}-{end}/{size}"
