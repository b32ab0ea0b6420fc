"""Job kind ``profile_table``: the data profile of one CSV, Excel (.xlsx) or Parquet file.

:func:`profile_file` is synchronous and CPU-bound (the caller runs it in a thread or a
process); it reads a local file, which :func:`spool` writes from a stream of chunks (the file as
storage_svc sends it). Everything is computed by polars' streaming engine, never by parsing
here, and never with the whole file in memory:

1. **Format**: ``fmt`` if given, else the content type, else the file name's extension, else
   the first bytes (``PAR1``: Parquet; a zip holding ``xl/workbook.xml``: .xlsx; text: CSV). A
   declared format the bytes contradict is an error that names both.
2. **CSV text**: the bytes must be UTF-8 (the error names the byte offset and line of the first
   one that is not) without NUL bytes; the delimiter is ``options.delimiter`` or sniffed
   (``csv.Sniffer`` over the first 64 KiB, among ``, ; TAB |``, else ``,``). Fields are quoted
   with ``"`` (a quote inside is doubled), as RFC 4180 has it.
3. **Record structure** (CSV): a pass over the physical lines counts the fields of every
   record with the quoting taken into account (a quote toggles "inside a field", so quoted
   delimiters and newlines do not count; a line that starts inside a quote continues the record
   above). A record whose field count differs from the header's is a *ragged row*: counted, the
   first few reported with their line, and still profiled (missing fields are empty, extra
   fields are ignored), never dropped. A blank line is a ragged row of one field. Limit: a quote
   in the middle of an unquoted field (``ab"c``) is not CSV; polars refuses such a file and the
   error says where.
4. **Values as text**: the CSV (or the sheet) is read once, every value as text, into a
   temporary Parquet file next to the input; later passes read only the columns they need.
5. **Types from every value**: a column takes the most specific type among ``boolean``
   (true/false in any of three cases), ``integer`` (64-bit), ``float``, ``date``
   (``YYYY-MM-DD``) and ``datetime`` (ISO 8601 without offset: ``T`` or a space, then
   ``HH:MM:SS`` and an optional fraction; a bare date counts) that parses the most of its
   values, when that is at least ``options.min_type_share`` of its non-empty values; otherwise
   it is ``string``. Every row of the file takes part (``type_inference.rows``), not a sample.
   The non-empty values that do not parse as the column's type are its ``invalid`` count (the
   first few are reported with their line); they do not enter its statistics. Spaces around a
   value, or a decimal comma, make it text. A column with no value at all is ``empty``.
   Parquet columns keep the file's own types; lists, structs, binary and times there are
   ``other``, only counted.
6. **Statistics** per column: ``count`` (valid values), ``nulls`` (empty or missing values, and
   NaN), ``invalid``; ``count + nulls + invalid == rows``. ``distinct`` counts the valid values
   exactly (``distinct_method: "exact"``) when an estimate (HyperLogLog, polars
   ``approx_n_unique``: measured from under 1 % to 9 % off at a million values and more — 8 %
   under for 1.5 million sequential ids read from a CSV — and up to ~10 % around a few
   thousand) is at most ``options.exact_distinct_max``, else it is that estimate
   (``"approximate"``); ``null`` for ``other`` columns. Numbers: min, max, mean, std (sample)
   and the quantiles of ``options.quantiles`` (linear interpolation) over all values, or over
   every n-th value when there are more than ``options.exact_quantile_max``
   (``quantiles_method: "sample"``, with its size). Dates and datetimes: min and max. Text: the
   ``options.top_k`` most frequent values (ties by value; only when distinct is exact) and the
   min/max/mean length in characters. Booleans: both values with their counts as
   ``top_values``. A statistic that does not apply, or is not finite (an infinity), is
   ``null``; every key is always present.

Memory is bounded by the readers' chunk size (``options.read_chunk_bytes``: polars 2.1 reads
CSV and lines 32 MiB at a time with several chunks in flight per thread, ~250 MiB for one scan
on two cores, so this sets ``POLARS_CSV_CHUNK_SIZE`` and ``POLARS_NDJSON_CHUNK_SIZE`` for the
process), by the row groups of the text copy (about 4 MiB each, two read ahead:
``POLARS_ROW_GROUP_PREFETCH_SIZE`` unless the environment sets it; polars' default is 16 or
more), by ``exact_distinct_max`` (the groups of an exact count) and by ``exact_quantile_max``
(the values one quantile pass holds). The line pass reads all its text first, in parallel, so
that only integers wait for the running sums that need the lines in order. An .xlsx sheet is
the exception: the format has no streaming reader, so the sheet is read whole, and
``options.max_excel_bytes`` bounds the file.

The result is JSON-serialisable (dates as ISO 8601 text), with stable keys. For this CSV, with
``min_type_share=0.75``::

    amount,city,day
    1.5,Paris,2024-01-01
    ,Oslo,2024-01-15
    5,Paris,2024-02-01,extra
    10,Oslo,2024-02-20
    n/a,Paris,2024-03-01

the profile is::

    {
      "file": {"format": "csv", "size_bytes": 119, "rows": 5, "columns": 3,
               "encoding": "utf-8", "delimiter": ",", "sheet": null, "sheets": null},
      "type_inference": {"method": "values", "rows": 5, "min_share": 0.75},
      "columns": [
        {"name": "amount", "type": "float", "count": 3, "nulls": 1, "invalid": 1,
         "distinct": 3, "distinct_method": "exact",
         "min": 1.5, "max": 10.0, "mean": 5.5, "std": 4.272001872658765,
         "quantiles": {"p1": 1.57, "p5": 1.85, "p25": 3.25, "p50": 5.0, "p75": 7.5,
                       "p95": 9.5, "p99": 9.9},
         "quantiles_method": "exact", "quantiles_sample_size": null,
         "top_values": null, "length": null},
        {"name": "city", "type": "string", "count": 5, "nulls": 0, "invalid": 0,
         "distinct": 2, "distinct_method": "exact", "min": null, "max": null, "mean": null,
         "std": null, "quantiles": null, "quantiles_method": null,
         "quantiles_sample_size": null,
         "top_values": [{"value": "Paris", "count": 3}, {"value": "Oslo", "count": 2}],
         "length": {"min": 4, "max": 5, "mean": 4.6}},
        {"name": "day", "type": "date", "count": 5, "nulls": 0, "invalid": 0,
         "distinct": 5, "distinct_method": "exact", "min": "2024-01-01",
         "max": "2024-03-01", "mean": null, "std": null, "quantiles": null,
         "quantiles_method": null, "quantiles_sample_size": null, "top_values": null,
         "length": null}
      ],
      "malformed": {
        "ragged_rows": 1,
        "ragged_samples": [{"line": 4, "row": 3, "fields": 4, "expected_fields": 3}],
        "invalid_values": 1,
        "invalid_samples": [{"line": 6, "row": 5, "column": "amount", "value": "n/a",
                             "expected_type": "float"}]
      }
    }

``row`` is the data row (1 = the first row after the header); ``line`` is the physical line
where the record starts (1 = the header; ``null`` for a sheet). Parquet files have no malformed
rows. Errors are :class:`common.errors.InvalidInput` (unreadable, empty, wrong format or
encoding) and :class:`common.errors.TooLarge` (over ``max_bytes`` or ``max_columns``), each
with a message that names the problem.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import os
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import fastexcel
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.errors import InvalidInput, TooLarge
from section_worker.kinds import inputs
from section_worker.kinds.base import KindContext, KindError, KindOutcome

logger = logging.getLogger(__name__)

FORMATS = ("csv", "xlsx", "parquet")
"""The formats :func:`profile_file` reads."""

MIB = 1024 * 1024

Progress = Callable[[float], None]
"""Called with the fraction of the work done, from 0.0 to 1.0, never decreasing, on the thread
that runs :func:`profile_file`."""

_FORMAT_ALIASES = {
    "csv": "csv",
    "tsv": "csv",
    "txt": "csv",
    "text": "csv",
    "xlsx": "xlsx",
    "xlsm": "xlsx",
    "excel": "xlsx",
    "parquet": "parquet",
    "pq": "parquet",
}
_CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "csv",
    "text/plain": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}
# Bytes that start files of formats this kind does not read, named in the error.
_FOREIGN_MAGIC = (
    (b"\xd0\xcf\x11\xe0", "a legacy Excel .xls (or other OLE2) file; save it as .xlsx or CSV"),
    (b"\x1f\x8b", "a gzip-compressed file; send it uncompressed"),
    (b"%PDF", "a PDF document"),
)

_BOOL_TRUE = ("true", "True", "TRUE")
_BOOL_FALSE = ("false", "False", "FALSE")
_DATE_FORMAT = "%Y-%m-%d"
_FRACTION = "%.f"
# Whole seconds first: their parse is several times faster than one that allows a fraction,
# which is tried only on values with a dot. A datetime column may hold bare dates (midnight).
_DATETIME_PARTS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S" + _FRACTION,
    "%Y-%m-%d %H:%M:%S" + _FRACTION,
    _DATE_FORMAT,
)
# Only values that start like an ISO date are tried as dates (the parse is the costly one).
_ISO_DATE_START = r"^\d{4}-\d{1,2}-\d{1,2}"
# The order is the preference when two types parse as many values (an integer is a float too).
_CANDIDATES = ("boolean", "integer", "float", "date", "datetime")
_NUMERIC = ("integer", "float")

_SNIFF_BYTES = 64 * 1024
_CHECK_CHUNK = MIB
_SPOOL_BUFFER = MIB
_ROW_GROUP_BYTES = 4 * MIB
_SAMPLE_VALUE_CHARS = 200


class ProfileOptions(BaseModel):
    """Limits and choices of one profile; every field has a working default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=500 * MIB, gt=0, description="largest file profiled")
    # An .xlsx sheet is read whole: measured, a 17 MB workbook (200,000 rows of 12 columns)
    # peaks at ~290 MiB and a 35 MB one at ~470 MiB, so 24 MiB keeps under 512 MiB.
    max_excel_bytes: int = Field(
        default=24 * MIB, gt=0, description="largest .xlsx file (read whole into memory)"
    )
    max_columns: int = Field(default=1_000, ge=1, description="widest table profiled")
    top_k: int = Field(default=10, ge=0, le=1_000, description="top values listed per column")
    exact_distinct_max: int = Field(
        default=1_000_000,
        ge=0,
        description="distinct values counted exactly up to this estimate; approximated above",
    )
    quantiles: tuple[float, ...] = Field(
        default=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), max_length=100
    )
    exact_quantile_max: int = Field(
        default=5_000_000,
        ge=1,
        description="values a quantile is computed over; more are sampled every n-th",
    )
    malformed_samples: int = Field(
        default=10, ge=0, le=1_000, description="ragged rows and invalid values listed, each"
    )
    min_type_share: float = Field(
        default=0.9, gt=0, le=1, description="share of values a type must parse to be chosen"
    )
    delimiter: str | None = Field(default=None, description="CSV delimiter; sniffed when None")
    sheet: str | None = Field(default=None, description=".xlsx sheet name; the first when None")
    null_values: tuple[str, ...] = Field(
        default=(), max_length=100, description="CSV values read as missing, besides empty"
    )
    read_chunk_bytes: int = Field(
        default=4 * MIB, ge=4096, le=256 * MIB, description="bytes a reader holds per chunk"
    )

    @field_validator("quantiles")
    @classmethod
    def _quantiles_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= q <= 1 for q in value):
            raise ValueError("every quantile must be between 0 and 1")
        return tuple(sorted(set(value)))

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in '"\r\n'):
            raise ValueError("the delimiter is one character, not a quote or a line break")
        return value


# --- the entry point ------------------------------------------------------------------------


def profile_file(
    path: Path,
    *,
    fmt: str | None = None,
    options: ProfileOptions,
    content_type: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The profile of the table in ``path`` (see the module docstring for its shape).

    A text copy of the values (compressed Parquet, about half the CSV's size) is written to a
    temporary folder next to ``path`` and removed at the end. polars' reader settings are
    process-wide environment variables: profiles that run at the same time in one process
    should share one ``options.read_chunk_bytes``."""
    started = time.monotonic()
    report = _Reporter(progress)
    size = path.stat().st_size
    if size == 0:
        raise InvalidInput("the file is empty")
    if size > options.max_bytes:
        raise TooLarge(f"the file has {size} bytes; the limit is {options.max_bytes}")
    kind = detect_format(path, fmt=fmt, content_type=content_type)
    _bound_reader_memory(options.read_chunk_bytes)
    with tempfile.TemporaryDirectory(prefix=".profile-", dir=path.parent) as scratch:
        try:
            if kind == "csv":
                profile = _profile_csv(path, size, options, Path(scratch), report)
            elif kind == "xlsx":
                profile = _profile_xlsx(path, size, options, Path(scratch), report)
            else:
                profile = _profile_parquet(path, size, options, report)
        except (pl.exceptions.PolarsError, fastexcel.FastExcelError) as exc:
            logger.info("profile: the reader refused %s: %s", path.name, exc)
            raise InvalidInput(f"the {kind} file could not be read: {_first_line(exc)}") from exc
    report(1.0)
    logger.info(
        "profiled %s: %s, %d rows, %d columns, %.1f s",
        path.name,
        kind,
        profile["file"]["rows"],
        profile["file"]["columns"],
        time.monotonic() - started,
    )
    return profile


def detect_format(path: Path, *, fmt: str | None = None, content_type: str | None = None) -> str:
    """One of :data:`FORMATS`: ``fmt``, else the content type, else the extension, else the
    first bytes; an error when the bytes contradict the declared format."""
    declared: str | None = None
    if fmt is not None:
        declared = _FORMAT_ALIASES.get(fmt.strip().lower().lstrip("."))
        if declared is None:
            raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if declared is None and content_type:
        declared = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    if declared is None and path.suffix:
        declared = _FORMAT_ALIASES.get(path.suffix.lower().lstrip("."))
    sniffed = _sniff_magic(path)
    if declared is None:
        return sniffed
    if declared != sniffed:
        said = f"the file is declared {declared}"
        if sniffed == "csv":
            raise InvalidInput(f"{said}, but its content is not a {declared} file")
        raise InvalidInput(f"{said}, but its content is {sniffed}")
    return declared


def _sniff_magic(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(8)
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            raise InvalidInput(f"the file is {what}")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if "xl/workbook.xml" in archive.namelist():
                    return "xlsx"
        except zipfile.BadZipFile:
            pass
        raise InvalidInput("the file is a zip archive, not an .xlsx workbook")
    return "csv"


# --- spooling a stream to disk --------------------------------------------------------------


async def spool(
    chunks: AsyncIterator[bytes], directory: Path, max_bytes: int, *, suffix: str = ""
) -> Path:
    """Write ``chunks`` to a new file in ``directory`` and return its path.

    At most about a MiB is buffered before it is written (in a thread, so the event loop keeps
    running); more than ``max_bytes`` in all raises :class:`common.errors.TooLarge`. On any
    failure, the caller cancelling included, the partial file is removed."""
    fd, name = tempfile.mkstemp(prefix="spool-", suffix=suffix, dir=directory)
    path = Path(name)
    out: IO[bytes] = os.fdopen(fd, "wb")
    try:
        buffer = bytearray()
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"the file is larger than the limit of {max_bytes} bytes")
            buffer += chunk
            if len(buffer) >= _SPOOL_BUFFER:
                await asyncio.to_thread(out.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(out.write, bytes(buffer))
        await asyncio.to_thread(out.close)
    except BaseException:
        _discard(out, path)
        raise
    return path


def _discard(out: IO[bytes], path: Path) -> None:
    """Close and remove a partly written file (quick, so done even while being cancelled)."""
    out.close()
    path.unlink(missing_ok=True)


# --- per format -----------------------------------------------------------------------------


@dataclass
class _Column:
    """One column as the passes see it: its name, where it is read, and what was found."""

    index: int
    name: str
    source: str  # the column's name in the frame the passes read
    type: str = "string"
    from_text: bool = True  # values are text to parse (CSV, .xlsx), not typed (Parquet)
    present: int = 0  # non-empty values in the file
    parsed: int = 0  # of those, values that parse as the column's type
    datetime_parts: tuple[str, ...] = _DATETIME_PARTS  # the formats its datetimes have


@dataclass
class _Malformed:
    """Ragged rows (CSV) and where the records start, for the report."""

    ragged_rows: int = 0
    ragged_samples: list[dict[str, Any]] | None = None
    record_lines: Callable[[list[int]], dict[int, int]] | None = None


def _profile_csv(
    path: Path, size: int, options: ProfileOptions, scratch: Path, report: _Reporter
) -> dict[str, Any]:
    sample = _check_text(path, size, report.span(0.0, 0.1))
    delimiter = options.delimiter or _sniff_delimiter(sample)
    scan = pl.scan_csv(
        path,
        separator=delimiter,
        quote_char='"',
        infer_schema=False,
        truncate_ragged_lines=True,
        null_values=list(options.null_values) or None,
        encoding="utf8",
    )
    names = scan.collect_schema().names()
    _check_width(len(names), options)
    structure = _line_structure(path, delimiter)
    records, ragged, ragged_samples = _ragged_rows(structure, len(names), options)
    report(0.25)
    texts = scratch / "values.parquet"
    scan.select([_text(n).alias(f"c{i}") for i, n in enumerate(names)]).sink_parquet(
        texts,
        compression="lz4",
        statistics=False,
        row_group_size=_row_group_rows(size / max(records, 1)),
    )
    report(0.45)

    def record_lines(rows: list[int]) -> dict[int, int]:
        found = (
            structure.filter(pl.col("start") & pl.col("record").is_in(rows))
            .select("record", "line_no")
            .collect(engine="streaming")
        )
        return {int(r): int(n) for r, n in found.iter_rows()}

    malformed = _Malformed(ragged, ragged_samples, record_lines)
    file_info = {"format": "csv", "encoding": "utf-8", "delimiter": delimiter}
    return _profile_texts(
        texts, names, size, file_info, malformed, records, options, report.span(0.45, 1.0)
    )


def _profile_xlsx(
    path: Path, size: int, options: ProfileOptions, scratch: Path, report: _Reporter
) -> dict[str, Any]:
    if size > options.max_excel_bytes:
        raise TooLarge(
            f"the workbook has {size} bytes; .xlsx files are read whole and the limit is "
            f"{options.max_excel_bytes}: export the sheet as CSV, which is read as a stream"
        )
    sheets = list(fastexcel.read_excel(str(path)).sheet_names)
    if not sheets:
        raise InvalidInput("the workbook has no sheet")
    sheet = options.sheet if options.sheet is not None else sheets[0]
    if sheet not in sheets:
        raise InvalidInput(f"the workbook has no sheet {sheet!r}; its sheets are {sheets}")
    report(0.05)
    frame = pl.read_excel(
        path, sheet_name=sheet, engine="calamine", infer_schema_length=0, raise_if_empty=False
    )
    names = frame.columns
    _check_width(len(names), options)
    if frame.height == 0:
        raise InvalidInput(f"sheet {sheet!r} has no rows")
    texts = scratch / "values.parquet"
    per_row = frame.estimated_size() / frame.height
    frame.select([_text(n).alias(f"c{i}") for i, n in enumerate(names)]).write_parquet(
        texts, compression="lz4", statistics=False, row_group_size=_row_group_rows(per_row)
    )
    records = frame.height + 1
    del frame
    report(0.4)
    file_info = {"format": "xlsx", "sheet": sheet, "sheets": sheets}
    return _profile_texts(
        texts, names, size, file_info, _Malformed(), records, options, report.span(0.4, 1.0)
    )


def _profile_parquet(
    path: Path, size: int, options: ProfileOptions, report: _Reporter
) -> dict[str, Any]:
    scan = pl.scan_parquet(path)
    schema = scan.collect_schema()
    _check_width(len(schema), options)
    rows = int(scan.select(pl.len()).collect(engine="streaming").item())
    if rows == 0:
        raise InvalidInput(f"the table has no rows (only a schema of {len(schema)} columns)")
    columns = [
        _Column(i, name, name, _type_of(dtype), from_text=False)
        for i, (name, dtype) in enumerate(schema.items())
    ]
    report(0.1)
    stats = _statistics(scan, columns, rows, options, report.span(0.1, 1.0))
    return _assemble(
        {"format": "parquet"},
        size,
        rows,
        {"method": "schema", "rows": rows, "min_share": None},
        stats,
        _Malformed(),
        [],
    )


def _profile_texts(
    texts: Path,
    names: Sequence[str],
    size: int,
    file_info: dict[str, Any],
    malformed: _Malformed,
    records: int,
    options: ProfileOptions,
    report: _Reporter,
) -> dict[str, Any]:
    """The profile of a table read as text into ``texts`` (a Parquet file, columns c0…)."""
    scan = pl.scan_parquet(texts)
    columns = [_Column(i, name, f"c{i}") for i, name in enumerate(names)]
    rows = _infer_types(scan, columns, options)
    if rows == 0:
        raise InvalidInput(f"the table has no rows (only a header of {len(names)} columns)")
    if records - 1 != rows and malformed.record_lines is not None:
        logger.warning("profile: %d records by line structure, %d rows read", records - 1, rows)
        malformed.record_lines = None
    report(0.25)
    stats = _statistics(scan, columns, rows, options, report.span(0.25, 0.9))
    invalid = _invalid_samples(texts, columns, options.malformed_samples)
    if invalid:
        lines = (
            malformed.record_lines([s["row"] for s in invalid]) if malformed.record_lines else {}
        )
        for sample in invalid:
            sample["line"] = lines.get(sample["row"])
    inference = {"method": "values", "rows": rows, "min_share": options.min_type_share}
    return _assemble(file_info, size, rows, inference, stats, malformed, invalid)


def _assemble(
    file_info: dict[str, Any],
    size: int,
    rows: int,
    inference: dict[str, Any],
    columns: list[dict[str, Any]],
    malformed: _Malformed,
    invalid: list[dict[str, Any]],
) -> dict[str, Any]:
    file = {
        "format": file_info["format"],
        "size_bytes": size,
        "rows": rows,
        "columns": len(columns),
        "encoding": file_info.get("encoding"),
        "delimiter": file_info.get("delimiter"),
        "sheet": file_info.get("sheet"),
        "sheets": file_info.get("sheets"),
    }
    return {
        "file": file,
        "type_inference": inference,
        "columns": columns,
        "malformed": {
            "ragged_rows": malformed.ragged_rows,
            "ragged_samples": malformed.ragged_samples or [],
            "invalid_values": sum(c["invalid"] for c in columns),
            "invalid_samples": invalid,
        },
    }


# --- CSV text and structure -----------------------------------------------------------------


def _check_text(path: Path, size: int, report: _Reporter) -> str:
    """The first 64 KiB as text, once every byte of the file is known to be UTF-8 text."""
    sample = ""
    done = 0
    newlines = 0
    carry = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHECK_CHUNK):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise InvalidInput(
                    f"the file holds a NUL byte at offset {done + nul}: it is not a text table"
                )
            data = carry + chunk
            base = done - len(carry)
            try:
                text = data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as exc:
                # A character cut by the chunk boundary is completed by the next chunk.
                if exc.reason == "unexpected end of data" and len(data) - exc.start < 4:
                    text = data[: exc.start].decode("utf-8")
                    carry = data[exc.start :]
                else:
                    at = base + exc.start
                    line = newlines + data.count(b"\n", 0, exc.start) + 1
                    raise InvalidInput(
                        f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                        f"{at} (line {line}) is not valid UTF-8; save the file as UTF-8"
                    ) from None
            if len(sample) < _SNIFF_BYTES:
                sample += text[: _SNIFF_BYTES - len(sample)]
            newlines += chunk.count(b"\n")
            done += len(chunk)
            report(done / size)
    if carry:
        raise InvalidInput(
            f"the file is not UTF-8 text: it ends inside a character at offset {size - len(carry)}"
        )
    return sample


def _sniff_delimiter(sample: str) -> str:
    cut = sample.rfind("\n")
    text = sample[:cut] if cut > 0 else sample
    try:
        return csv.Sniffer().sniff(text, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _line_structure(path: Path, delimiter: str) -> pl.LazyFrame:
    """One row per physical line: ``line_no`` (1-based), ``start`` (a record starts here),
    ``end`` (a record ends here), ``record`` (0 = the header), ``first_line`` (where the
    record started) and ``fields`` (the record's field count so far; whole on its end line)."""
    line = pl.col("line")
    quotes = pl.col("quotes")
    quoted = pl.when(quotes > 0).then(line)  # null elsewhere: the regexes skip those lines

    def outside_quotes(text: pl.Expr) -> pl.Expr:
        """Delimiters of ``text`` outside quoted spans (an open one runs to the line's end)."""
        free = text.str.replace_all(r'"[^"]*"', "").str.replace(r'"[^"]*$', "")
        return free.str.count_matches(delimiter, literal=True)

    open_start = pl.col("open_start")
    start = pl.col("start")
    delimiters = pl.col("delimiters")
    seen = pl.col("seen")
    return (
        pl.scan_lines(path, name="line", row_index_name="line_no", row_index_offset=1)
        .with_columns(line.str.count_matches('"', literal=True).cast(pl.Int64).alias("quotes"))
        # Everything read from the text first, in parallel, as two counts per line: the
        # delimiters outside quotes if the line starts outside a quoted field, and if it
        # starts inside one. Only small integers then go through the passes in line order
        # (the running sums), so no text waits there.
        .select(
            "line_no",
            "quotes",
            pl.coalesce(outside_quotes(quoted), line.str.count_matches(delimiter, literal=True))
            .cast(pl.Int64)
            .alias("if_closed"),
            pl.coalesce(outside_quotes(quoted.str.replace(r'^[^"]*"', "")), pl.lit(0))
            .cast(pl.Int64)
            .alias("if_open"),
        )
        .with_columns(((quotes.cum_sum() - quotes) % 2 == 1).alias("open_start"))
        .with_columns(
            pl.when(open_start)
            .then(pl.col("if_open"))
            .otherwise(pl.col("if_closed"))
            .alias("delimiters"),
            (~open_start).alias("start"),
            (open_start ^ (quotes % 2 == 1)).alias("open_end"),
        )
        .with_columns(delimiters.cum_sum().alias("seen"))
        .select(
            "line_no",
            "start",
            (~pl.col("open_end")).alias("end"),
            (start.cast(pl.Int64).cum_sum() - 1).alias("record"),
            pl.when(start).then(pl.col("line_no")).forward_fill().alias("first_line"),
            (seen - pl.when(start).then(seen - delimiters).forward_fill() + 1).alias("fields"),
        )
    )


def _ragged_rows(
    structure: pl.LazyFrame, expected: int, options: ProfileOptions
) -> tuple[int, int, list[dict[str, Any]]]:
    """(records including the header, ragged data rows, the first few of them)."""
    ends = structure.filter(pl.col("end"))
    ragged = (pl.col("fields") != expected) & (pl.col("record") > 0)
    # Two answers from one pass over the lines (collect_all shares the scan); the samples as
    # a query of their own: gathered inside the count's select, they held every record.
    counts, first = pl.collect_all(
        [
            ends.select(pl.len().alias("records"), ragged.sum().alias("ragged")),
            ends.filter(ragged).head(options.malformed_samples),
        ],
        engine="streaming",
    )
    samples = [
        {
            "line": int(s["first_line"]),
            "row": int(s["record"]),
            "fields": int(s["fields"]),
            "expected_fields": expected,
        }
        for s in first.iter_rows(named=True)
    ]
    return int(counts["records"][0]), int(counts["ragged"][0]), samples


# --- types ----------------------------------------------------------------------------------


def _infer_types(scan: pl.LazyFrame, columns: list[_Column], options: ProfileOptions) -> int:
    """Count, over every row, how many values of each column parse as each type; choose each
    column's type. Returns the number of rows."""
    counts: list[pl.Expr] = [pl.len().alias("rows")]
    for col in columns:
        text = pl.col(col.source)
        counts += [
            text.count().alias(f"{col.index}.present"),
            _parse(text, "boolean").count().alias(f"{col.index}.boolean"),
            _parse(text, "integer").count().alias(f"{col.index}.integer"),
            _parse(text, "float").count().alias(f"{col.index}.float"),
            text.str.contains(_ISO_DATE_START).sum().alias(f"{col.index}.iso"),
        ]
    first = scan.select(counts).collect(engine="streaming").row(0, named=True)
    # Dates are parsed only in the columns where enough values look like one.
    dated = [
        c
        for c in columns
        if first[f"{c.index}.iso"] >= options.min_type_share * first[f"{c.index}.present"] > 0
    ]
    second: dict[str, Any] = {}
    if dated:
        # One count per format, so that the parse of a datetime column later tries only the
        # formats its values have (each costs a pass over the text).
        second = (
            scan.select(
                [
                    _parse(pl.col(c.source), "datetime", (part,)).count().alias(f"{c.index}.{n}")
                    for c in dated
                    for n, part in enumerate(_DATETIME_PARTS)
                ]
            )
            .collect(engine="streaming")
            .row(0, named=True)
        )
    for col in columns:
        col.present = int(first[f"{col.index}.present"])
        parsed = {kind: int(first[f"{col.index}.{kind}"]) for kind in _CANDIDATES[:3]}
        by_part = {p: int(second.get(f"{col.index}.{n}", 0)) for n, p in enumerate(_DATETIME_PARTS)}
        parsed["date"] = by_part[_DATE_FORMAT]
        parsed["datetime"] = sum(by_part.values())  # a value matches at most one part
        col.type, col.parsed = _choose_type(col.present, parsed, options.min_type_share)
        col.datetime_parts = tuple(p for p in _DATETIME_PARTS if by_part[p])
    return int(first["rows"])


def _choose_type(present: int, parsed: dict[str, int], min_share: float) -> tuple[str, int]:
    """The most specific type that parses the most values, if it parses enough of them."""
    if present == 0:
        return "empty", 0
    best = max(_CANDIDATES, key=lambda kind: (parsed.get(kind, 0), -_CANDIDATES.index(kind)))
    if parsed.get(best, 0) >= min_share * present:
        return best, parsed[best]
    return "string", present


def _parse(text: pl.Expr, kind: str, datetime_parts: Sequence[str] = _DATETIME_PARTS) -> pl.Expr:
    """Text as ``kind``; null where it does not parse. A datetime is tried with each of
    ``datetime_parts`` in turn (a date format reads a bare date as midnight)."""
    if kind == "boolean":
        return pl.when(text.is_in(_BOOL_TRUE)).then(True).when(text.is_in(_BOOL_FALSE)).then(False)
    if kind == "integer":
        return text.cast(pl.Int64, strict=False)
    if kind == "float":
        return text.cast(pl.Float64, strict=False)
    if kind == "date":
        return text.str.to_date(_DATE_FORMAT, strict=False)
    if kind == "datetime":
        parts = [_parse_datetime(text, part) for part in datetime_parts]
        return parts[0] if len(parts) == 1 else pl.coalesce(parts)
    return text


def _parse_datetime(text: pl.Expr, part: str) -> pl.Expr:
    """Text as a datetime in one format of :data:`_DATETIME_PARTS`; no value matches two."""
    if part == _DATE_FORMAT:
        return text.str.to_date(part, strict=False).cast(pl.Datetime("us"))
    if part.endswith(_FRACTION):
        text = pl.when(text.str.contains(".", literal=True)).then(text)
    return text.str.to_datetime(part, time_unit="us", strict=False)


def _type_of(dtype: pl.DataType) -> str:
    """The profile type of a Parquet column."""
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if dtype == pl.Null:
        return "empty"
    return "other"


def _values(col: _Column) -> pl.Expr:
    """The column's valid values, typed (null where missing, invalid or NaN)."""
    source = pl.col(col.source)
    if col.from_text:
        typed = _parse(source, col.type, col.datetime_parts)
    elif col.type == "float":
        typed = source.cast(pl.Float64)
    elif col.type == "string":
        typed = source.cast(pl.String)
    else:
        typed = source
    if col.type == "float":
        typed = typed.fill_nan(None)
    return typed


# --- statistics -----------------------------------------------------------------------------


def _statistics(
    scan: pl.LazyFrame,
    columns: list[_Column],
    rows: int,
    options: ProfileOptions,
    report: _Reporter,
) -> list[dict[str, Any]]:
    """Every column's statistics: one streaming pass for all of them, then one small pass per
    column for its exact distinct count, top values and quantiles."""
    exprs: list[pl.Expr] = []
    for col in columns:
        # Each column is parsed once, below, and every statistic reads the parsed values.
        values = pl.col(f"v{col.index}")
        key = f"{col.index}."
        exprs.append(values.count().alias(key + "count"))
        if col.type == "other":  # lists, structs, binary, times: counted only
            continue
        exprs.append(values.drop_nulls().approx_n_unique().alias(key + "approx"))
        if col.type in _NUMERIC:
            exprs += [
                values.min().alias(key + "min"),
                values.max().alias(key + "max"),
                values.mean().alias(key + "mean"),
                values.std().alias(key + "std"),
            ]
        elif col.type in ("date", "datetime"):
            exprs += [values.min().alias(key + "min"), values.max().alias(key + "max")]
        elif col.type == "boolean":
            exprs.append(values.sum().alias(key + "true"))
        elif col.type == "string":
            length = values.str.len_chars()
            exprs += [
                length.min().alias(key + "len_min"),
                length.max().alias(key + "len_max"),
                length.mean().alias(key + "len_mean"),
            ]
    parsed = scan.select([_values(col).alias(f"v{col.index}") for col in columns])
    found = parsed.select(exprs).collect(engine="streaming").row(0, named=True)
    report(0.3)
    out = []
    for n, col in enumerate(columns):
        out.append(_column_profile(scan, col, found, rows, options))
        report(0.3 + 0.7 * (n + 1) / len(columns))
    return out


def _column_profile(
    scan: pl.LazyFrame,
    col: _Column,
    found: dict[str, Any],
    rows: int,
    options: ProfileOptions,
) -> dict[str, Any]:
    key = f"{col.index}."
    count = int(found[key + "count"])
    invalid = col.present - col.parsed if col.from_text else 0
    profile: dict[str, Any] = {
        "name": col.name,
        "type": col.type,
        "count": count,
        "nulls": rows - count - invalid,
        "invalid": invalid,
        "distinct": 0,
        "distinct_method": "exact",
        "min": _json(found.get(key + "min")),
        "max": _json(found.get(key + "max")),
        "mean": _json(found.get(key + "mean")),
        "std": _json(found.get(key + "std")),
        "quantiles": None,
        "quantiles_method": None,
        "quantiles_sample_size": None,
        "top_values": None,
        "length": None,
    }
    if col.type == "string":
        profile["length"] = {
            "min": _json(found[key + "len_min"]),
            "max": _json(found[key + "len_max"]),
            "mean": _json(found[key + "len_mean"]),
        }
    if col.type == "other":
        profile["distinct"] = profile["distinct_method"] = None
        return profile
    if count == 0:
        return profile
    if col.type == "boolean":
        true = int(found[key + "true"])
        counted = [(True, true), (False, count - true)]
        counted.sort(key=lambda vc: (-vc[1], vc[0]))
        profile["distinct"] = sum(1 for _, n in counted if n)
        profile["top_values"] = [{"value": v, "count": n} for v, n in counted if n][: options.top_k]
        return profile
    estimate = int(found[key + "approx"])
    values = scan.select(_values(col).alias("v")).drop_nulls()
    if estimate <= options.exact_distinct_max:
        groups = values.group_by("v").agg(pl.len().alias("n"))
        wanted = [pl.len().alias("distinct")]
        if col.type == "string" and options.top_k:
            wanted.append(
                pl.struct("v", "n")
                .sort_by(["n", "v"], descending=[True, False])
                .head(options.top_k)
                .implode()
                .alias("top")
            )
        exact = groups.select(wanted).collect(engine="streaming").row(0, named=True)
        profile["distinct"] = int(exact["distinct"])
        if "top" in exact:
            profile["top_values"] = [{"value": t["v"], "count": int(t["n"])} for t in exact["top"]]
    else:
        profile["distinct"] = estimate
        profile["distinct_method"] = "approximate"
    if col.type in _NUMERIC and options.quantiles:
        step = math.ceil(count / options.exact_quantile_max)
        sampled = values.gather_every(step) if step > 1 else values
        qs = list(options.quantiles)
        got = sampled.select(pl.col("v").cast(pl.Float64).quantile(qs, "linear")).collect(
            engine="streaming"
        )
        profile["quantiles"] = {
            _quantile_name(q): _json(v) for q, v in zip(qs, got["v"][0], strict=True)
        }
        profile["quantiles_method"] = "sample" if step > 1 else "exact"
        profile["quantiles_sample_size"] = math.ceil(count / step) if step > 1 else None
    return profile


def _invalid_samples(texts: Path, columns: list[_Column], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` values, in file order, that do not parse as their column's type."""
    bad = [c for c in columns if c.from_text and c.present > c.parsed]
    if not bad or limit == 0:
        return []
    flags = [
        (
            pl.col(c.source).is_not_null()
            & _parse(pl.col(c.source), c.type, c.datetime_parts).is_null()
        ).alias(f"bad{c.index}")
        for c in bad
    ]
    found = (
        pl.scan_parquet(texts, row_index_name="row", row_index_offset=1)
        .select("row", *[c.source for c in bad], *flags)
        .filter(pl.any_horizontal(*[f"bad{c.index}" for c in bad]))
        .head(limit)
        .collect(engine="streaming")
    )
    samples: list[dict[str, Any]] = []
    for record in found.iter_rows(named=True):
        for col in bad:
            if record[f"bad{col.index}"] and len(samples) < limit:
                samples.append(
                    {
                        "line": None,
                        "row": int(record["row"]),
                        "column": col.name,
                        "value": str(record[col.source])[:_SAMPLE_VALUE_CHARS],
                        "expected_type": col.type,
                    }
                )
    return samples


# --- helpers --------------------------------------------------------------------------------


class _Reporter:
    """Forwards progress to the caller's callback, never backwards, within a sub-range."""

    def __init__(
        self, callback: Progress | None, low: float = 0.0, high: float = 1.0, parent: Any = None
    ) -> None:
        self._callback = callback
        self._low, self._high = low, high
        self._parent: _Reporter | None = parent
        self._last = -1.0

    def __call__(self, fraction: float) -> None:
        if self._parent is not None:
            self._parent(self._low + (self._high - self._low) * min(max(fraction, 0.0), 1.0))
            return
        value = min(max(fraction, 0.0), 1.0)
        if self._callback is not None and value > self._last:
            self._last = value
            self._callback(value)

    def span(self, low: float, high: float) -> _Reporter:
        """A reporter whose 0..1 is this one's ``low``..``high``."""
        return _Reporter(self._callback, low, high, parent=self)


def _bound_reader_memory(chunk_bytes: int) -> None:
    """Set the reader settings polars reads from the environment at each query."""
    wanted = {
        "POLARS_CSV_CHUNK_SIZE": str(chunk_bytes),
        "POLARS_NDJSON_CHUNK_SIZE": str(chunk_bytes),
        "POLARS_ROW_GROUP_PREFETCH_SIZE": os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE", "2"),
    }
    for name, value in wanted.items():
        # Written only when it changes: a profile running in another thread may be reading the
        # environment, and the same settings every time mean it is written once per process.
        if os.environ.get(name) != value:
            os.environ[name] = value


def _text(name: str) -> pl.Expr:
    """A column as text, an empty value (quoted ``""`` too) as missing."""
    text = pl.col(name).cast(pl.String)
    return pl.when(text != "").then(text)


def _check_width(columns: int, options: ProfileOptions) -> None:
    if columns > options.max_columns:
        raise TooLarge(f"the table has {columns} columns; the limit is {options.max_columns}")


def _row_group_rows(bytes_per_row: float) -> int:
    return int(min(max(_ROW_GROUP_BYTES / max(bytes_per_row, 1.0), 1_024), 262_144))


def _quantile_name(q: float) -> str:
    return f"p{round(q * 100, 6):g}"


def _json(value: Any) -> Any:
    """A statistic as JSON: dates as ISO 8601 text, no NaN or infinity."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0]
    return text[:300] or type(exc).__name__


# --- the job kind ---------------------------------------------------------------------------

NAME = "profile_table"
NEEDS_PLATFORM = False
Options = ProfileOptions


async def run(ctx: KindContext) -> KindOutcome:
    """Profiles the file the record's ``table_file`` references: streamed from storage to the
    job's scratch folder, profiled in a thread with progress in percent; the profile is the
    job's structured result. A thread cannot be stopped: a job that times out or is cancelled
    ends at once, its profile running on to its end in the background and then dropped."""
    options = ctx.options
    assert isinstance(options, ProfileOptions)
    if ctx.files is None:
        raise KindError("this worker is not connected to file storage")
    ref = inputs.table_file(ctx.job, inputs.record_of(ctx.job))
    if ref.size > options.max_bytes:
        raise TooLarge(f"file {ref.name!r} has {ref.size} bytes; the limit is {options.max_bytes}")
    ctx.step(f"reading file {ref.name!r} from storage")
    suffix = Path(ref.name).suffix.lower()[:16]
    chunks = ctx.files.open(ref, ctx.job.owner_id)
    path = await spool(chunks, ctx.scratch, options.max_bytes, suffix=suffix)
    ctx.step(f"profiling file {ref.name!r}")
    loop = asyncio.get_running_loop()

    def progress(fraction: float) -> None:
        loop.call_soon_threadsafe(ctx.progress, int(fraction * 100), 100, "percent profiled")

    profile = await asyncio.to_thread(
        profile_file, path, options=options, content_type=ref.content_type, progress=progress
    )
    return KindOutcome(result={"file_id": ref.file_id, "name": ref.name, **profile})
