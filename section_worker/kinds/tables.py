"""The table side of ``transform_table``: a spreadsheet read in chunks of rows, each chunk's
prompt and the AI's answer to it, and the output file assembled in row order.

Plain synchronous Python doing file I/O and parsing on the CPU: async callers run these in a
thread (``asyncio.to_thread``). Rows are numbered from 1, the header excluded, in both formats;
a :class:`Chunk` covers ``first_row`` to ``last_row`` inclusive, and a chunk of ``chunk_rows``
rows with index ``i`` starts at row ``i * chunk_rows + 1`` — always the same rows for the same
file, so a chunk's answer can be kept and reused by index.

**Reading** (:func:`iter_chunks`). Every cell is read as text; an empty cell is ``""``.

* CSV (UTF-8, a BOM allowed, comma-separated, ``"`` quotes) is read record by record with the
  standard library's ``csv`` reader as the chunks are asked for, so memory holds one chunk
  whatever the file's size, and a caller waiting on the AI platform between chunks reads no
  further. (polars' ``scan_csv(...).collect_batches()`` was measured and not used: its engine
  runs ahead of a slow consumer and buffers the rest of the file, 200 MiB of a 150 MB CSV after
  the first batch; polars' parse and ``to_dicts`` are no faster than this reader for rows as
  Python dicts, 2 s for 50 MB either way.) Blank lines are skipped. A row shorter than the
  header is padded with empty cells; a row longer than the header with anything in the extra
  cells, a byte that is not UTF-8, or a field over the ``csv`` module's size limit (131,072
  characters) is a :class:`TableError` naming the row, raised when the reading reaches it.
* XLSX is read with fastexcel (the calamine engine behind ``polars.read_excel``), one sheet
  (the first unless named), every cell as text. An XLSX is a ZIP of XML that this engine loads
  a whole sheet at a time, so memory grows with the sheet, not with the chunk: measured about
  90 bytes per cell at peak (a 14 MB file of 3 million short cells peaked about 260 MiB above
  the process's start), that is about 20 times the compressed file. ``max_xlsx_bytes``
  (64 MiB by default) refuses a larger file up front, with a message that says to send it as
  CSV, instead of letting the worker run out of memory. Empty rows inside the sheet are kept
  (the row numbers stay the sheet's, less the header); empty rows before the header are
  skipped.

The header is the first row. A blank column name becomes ``column_<n>`` (its position from 1);
two columns of one name, more than ``max_columns`` columns, a file without a header, or one
without data rows is a :class:`TableError`.

**Prompt and answer.** :func:`chunk_prompt` is the JSON object ``{"kind": "transform_rows",
"instruction", "columns", "rows", "reply"}`` with the rows as objects in column order, so the
same chunk always gives the same bytes (the AI platform simulator answers this kind, see
``simulator/answers.py``). :func:`parse_answer` accepts ``{"rows": [...]}`` or a bare list,
optionally inside a Markdown code fence; it must hold exactly one object per row sent, in
order, each mapping column names to text, numbers, booleans or null. Anything else is an
:class:`AnswerError` naming the chunk's rows (and the row at fault when there is one).

**Writing** (:class:`OutputWriter`). An output row is the input row with the answer's columns
laid over it: an answer may rewrite input columns and may add new ones, which are appended to
the header in the order they first appear, row by row. Chunk results may arrive in any order;
each is written as soon as every chunk before it has been, so memory holds only the results
that arrived early. The rows go first to a spool file next to the output (CSV, the error
first, as many cells as the header had then), and :meth:`OutputWriter.close` streams the spool
into the CSV (or into an XLSX written by xlsxwriter in constant-memory mode) once the header is
known. **A chunk that failed is written
as its input rows, unchanged, with the reason in the last column** (``_error``, or ``_error_2``
… when the input already has that name; empty on every good row), so the output keeps every
input row in order; the summary lists failed chunks as ``{first_row, last_row, reason}``.

In an XLSX output a cell that reads as a plain decimal number of at most 15 digits (``-12``,
``2.50``; not ``007`` nor ``1e5``) is written as a number, everything else as text (never as a
formula). An XLSX holds at most 1,048,576 rows and 16,384 columns, and a cell at most 32,767
characters: an output over these is a :class:`TableError` at close.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import fastexcel
import xlsxwriter  # type: ignore[import-untyped]

from common.errors import InvalidInput, UpstreamError

logger = logging.getLogger(__name__)


class TableFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"


MAX_COLUMNS = 1_000
MAX_INSTRUCTION_CHARS = 4_000
DEFAULT_MAX_XLSX_BYTES = 64 * 1024 * 1024
XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_COLUMNS = 16_384
XLSX_MAX_CELL_CHARS = 32_767
ERROR_COLUMN = "_error"
PROMPT_KIND = "transform_rows"
REPLY_FORMAT = (
    'Answer with the JSON object {"rows": [...]}: one object per input row, in the same order, '
    "mapping column names to values; include the columns the instruction adds or changes."
)


class TableError(InvalidInput):
    """The table cannot be read or written as asked; the message says why."""


class AnswerError(UpstreamError):
    """The AI's answer to a chunk is not the rows it was asked for. ``first_row`` and
    ``last_row`` are the chunk's rows; ``row`` is the one at fault, when one is."""

    def __init__(self, first_row: int, last_row: int, detail: str, row: int | None = None) -> None:
        super().__init__(f"rows {first_row}-{last_row}: {detail}")
        self.first_row = first_row
        self.last_row = last_row
        self.row = row


@dataclass(frozen=True)
class Chunk:
    """Rows ``first_row`` to ``last_row`` of a table, each a column -> text mapping."""

    index: int
    first_row: int
    last_row: int
    rows: list[dict[str, str]]


@dataclass(frozen=True)
class FailedChunk:
    """A chunk that is in the output as its input rows, with the reason it failed."""

    first_row: int
    last_row: int
    reason: str


@dataclass(frozen=True)
class OutputSummary:
    """What :meth:`OutputWriter.close` wrote: data rows, chunks, the header, the failures."""

    rows: int
    chunks: int
    columns: tuple[str, ...]
    failed: tuple[FailedChunk, ...]


# --- reading -----------------------------------------------------------------------------------


def _header(raw: Sequence[str | None], max_columns: int) -> list[str]:
    """The column names of a header row (the rules are in the module docstring)."""
    if not raw or all(not (cell or "").strip() for cell in raw):
        raise TableError("the table has no header row")
    if len(raw) > max_columns:
        raise TableError(f"{len(raw)} columns, over the limit of {max_columns}")
    names = [(cell or "").strip() or f"column_{n}" for n, cell in enumerate(raw, start=1)]
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    if twice:
        raise TableError(f"the header names these columns more than once: {sorted(twice)}")
    return names


@contextlib.contextmanager
def _csv_records(path: Path) -> Iterator[Iterator[tuple[int, list[str]]]]:
    """The CSV's non-blank records with their number (the header is 0), read as they are
    asked for; a record the reader cannot take is a :class:`TableError` naming its number."""
    with path.open(encoding="utf-8-sig", newline="") as file:

        def records() -> Iterator[tuple[int, list[str]]]:
            reader = csv.reader(file)
            number = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    raise TableError(
                        f"row {number + 1}: the CSV is not UTF-8 text; save it as UTF-8"
                    ) from None
                except csv.Error as exc:
                    raise TableError(f"row {number + 1}: the CSV cannot be read: {exc}") from None
                if record:
                    yield number, record
                    number += 1

        yield records()


def _csv_header(path: Path, max_columns: int) -> list[str]:
    with _csv_records(path) as records:
        first = next(records, None)
    return _header(first[1] if first else [], max_columns)


def _csv_rows(path: Path, max_columns: int) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The header, and the data rows as they are read (the file stays open until the rows
    are all read, or the iterator is closed)."""
    columns = _csv_header(path, max_columns)
    width = len(columns)

    def rows() -> Iterator[dict[str, str]]:
        with _csv_records(path) as records:
            next(records)  # the header, checked above
            for number, record in records:
                if len(record) > width:
                    if any(cell.strip() for cell in record[width:]):
                        raise TableError(
                            f"row {number} has {len(record)} cells, the header {width} columns"
                        )
                    record = record[:width]
                elif len(record) < width:
                    record = record + [""] * (width - len(record))
                yield dict(zip(columns, record, strict=True))

    return columns, rows()


def _xlsx_rows(
    path: Path, sheet: str | None, max_columns: int, max_xlsx_bytes: int | None
) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The header, and the data rows of one sheet (loaded whole: see the module docstring)."""
    size = path.stat().st_size
    if max_xlsx_bytes is not None and size > max_xlsx_bytes:
        raise TableError(
            f"an XLSX of {size} bytes is over the limit of {max_xlsx_bytes} (a whole sheet is "
            "loaded in memory): send the table as CSV, which is read in a stream"
        )
    try:
        reader = fastexcel.read_excel(path)
        frame = reader.load_sheet(
            sheet if sheet is not None else 0, header_row=None, dtypes="string"
        ).to_polars()
    except fastexcel.SheetNotFoundError:
        raise TableError(f"the workbook has no sheet named {sheet!r}") from None
    except fastexcel.FastExcelError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TableError(f"not a readable XLSX ({first_line})") from None
    if frame.height == 0:
        raise TableError("the sheet is empty")
    columns = _header(frame.row(0), max_columns)
    frame = frame.slice(1).rename(dict(zip(frame.columns, columns, strict=True))).fill_null("")

    def rows() -> Iterator[dict[str, str]]:
        # Converted to Python a slice at a time: the frame is in memory already, its rows as
        # Python objects need not all be.
        for offset in range(0, frame.height, _XLSX_SLICE_ROWS):
            yield from frame.slice(offset, _XLSX_SLICE_ROWS).iter_rows(named=True)

    return columns, rows()


_XLSX_SLICE_ROWS = 10_000


def _open(
    path: Path, fmt: TableFormat, sheet: str | None, max_columns: int, max_xlsx_bytes: int | None
) -> tuple[list[str], Iterator[dict[str, str]]]:
    if fmt is TableFormat.CSV:
        return _csv_rows(path, max_columns)
    return _xlsx_rows(path, sheet, max_columns, max_xlsx_bytes)


def read_columns(
    path: Path,
    fmt: TableFormat,
    *,
    sheet: str | None = None,
    max_columns: int = MAX_COLUMNS,
    max_xlsx_bytes: int | None = DEFAULT_MAX_XLSX_BYTES,
) -> list[str]:
    """The table's column names (for a CSV, from its first record only)."""
    if fmt is TableFormat.CSV:
        return _csv_header(path, max_columns)
    return _xlsx_rows(path, sheet, max_columns, max_xlsx_bytes)[0]


def iter_chunks(
    path: Path,
    fmt: TableFormat,
    chunk_rows: int,
    *,
    sheet: str | None = None,
    max_columns: int = MAX_COLUMNS,
    max_xlsx_bytes: int | None = DEFAULT_MAX_XLSX_BYTES,
) -> Iterator[Chunk]:
    """The table's data rows in chunks of ``chunk_rows`` (the last one may be shorter), read
    as the chunks are asked for.

    Raises :class:`TableError` for a table it cannot read: at the first chunk for what the
    header shows, where the reading meets it for a bad row further on."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    _, rows = _open(path, fmt, sheet, max_columns, max_xlsx_bytes)
    index = 0
    while batch := list(itertools.islice(rows, chunk_rows)):
        first = index * chunk_rows + 1
        yield Chunk(index, first, first + len(batch) - 1, batch)
        index += 1
    if index == 0:
        raise TableError("the table has a header but no data rows")


# --- prompt and answer -------------------------------------------------------------------------


def check_instruction(instruction: str) -> str:
    """The instruction, stripped; a :class:`TableError` when it is empty or too long."""
    text = instruction.strip()
    if not text:
        raise TableError("the instruction is empty")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise TableError(
            f"the instruction has {len(text)} characters, over the limit of {MAX_INSTRUCTION_CHARS}"
        )
    return text


def chunk_prompt(
    instruction: str, columns: Sequence[str], rows: Sequence[Mapping[str, str]]
) -> str:
    """The prompt that asks the AI to apply ``instruction`` to ``rows`` (stable: the same
    arguments give the same text)."""
    payload = {
        "kind": PROMPT_KIND,
        "instruction": check_instruction(instruction),
        "columns": list(columns),
        "rows": [{column: row.get(column, "") for column in columns} for row in rows],
        "reply": REPLY_FORMAT,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


_FENCE = re.compile(r"\s*```[\w-]*\s*\n(.*?)\n?\s*```\s*", re.DOTALL)


def _cell(value: Any, column: str, number: int, chunk: tuple[int, int]) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnswerError(
                *chunk, f"row {number}, column {column!r}: {value} is no number", number
            )
        return repr(value)
    raise AnswerError(
        *chunk,
        f"row {number}, column {column!r} holds a {type(value).__name__}; a cell holds text, "
        "a number, a boolean or null",
        number,
    )


def parse_answer(text: str, expected_rows: int, *, first_row: int = 1) -> list[dict[str, str]]:
    """The rows of an answer to a prompt for ``expected_rows`` rows starting at ``first_row``,
    each a column -> text mapping; :class:`AnswerError` when the answer is not such rows."""
    span = (first_row, first_row + expected_rows - 1)
    fenced = _FENCE.fullmatch(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except ValueError as exc:
        reason = (
            f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        )
        raise AnswerError(*span, f"the answer is not JSON ({reason})") from None
    rows = value.get("rows") if isinstance(value, dict) else value
    if not isinstance(rows, list):
        raise AnswerError(*span, 'the answer is neither {"rows": [...]} nor a list of rows')
    if len(rows) != expected_rows:
        raise AnswerError(*span, f"the answer has {len(rows)} rows, {expected_rows} were sent")
    parsed: list[dict[str, str]] = []
    for number, row in enumerate(rows, start=first_row):
        if not isinstance(row, dict):
            raise AnswerError(
                *span, f"row {number} is a {type(row).__name__}, not an object", number
            )
        cells: dict[str, str] = {}
        for column, cell in row.items():
            if not column.strip():
                raise AnswerError(*span, f"row {number} has a column without a name", number)
            cells[column] = _cell(cell, column, number, span)
        parsed.append(cells)
    return parsed


# --- writing -----------------------------------------------------------------------------------

_blanks = itertools.repeat("")
_XLSX_NUMBER = re.compile(r"-?(?:0|[1-9]\d{0,14})(?:\.\d{1,14})?")


def _xlsx_number(text: str) -> float | None:
    """The cell as a number when it reads as a plain decimal of at most 15 digits."""
    if _XLSX_NUMBER.fullmatch(text) and sum(c.isdigit() for c in text) <= 15:
        return float(text)
    return None


class OutputWriter:
    """The output table, assembled in row order from chunk results given in any order.

    Give each chunk once, by :meth:`add` (its answer's rows) or :meth:`fail` (why it has
    none), then :meth:`close` to write the file. Used as a context manager, leaving the block
    without :meth:`close` (an exception) removes what was written."""

    def __init__(self, path: Path, fmt: TableFormat, columns: Sequence[str]) -> None:
        self.path = path
        self.fmt = fmt
        self._columns = list(columns)
        self._known = set(self._columns)
        self._spool_path = path.with_name(path.name + ".rows")
        self._spool: IO[str] | None = self._spool_path.open("w", encoding="utf-8", newline="")
        self._spool_writer = csv.writer(self._spool)
        self._next = 0
        # Results that arrived before a chunk ahead of them: index -> (chunk, rows or reason).
        self._held: dict[int, tuple[Chunk, list[dict[str, str]] | str]] = {}
        self._failed: list[FailedChunk] = []
        self._rows = 0

    @property
    def next_index(self) -> int:
        """The index of the first chunk not written yet."""
        return self._next

    @property
    def held(self) -> int:
        """How many results wait in memory for a chunk ahead of them."""
        return len(self._held)

    @property
    def failed(self) -> tuple[FailedChunk, ...]:
        """The failed chunks written so far, in row order."""
        return tuple(self._failed)

    def add(self, chunk: Chunk, rows: Sequence[Mapping[str, str]]) -> None:
        """Give a chunk's answer rows (one per input row, in order)."""
        if len(rows) != len(chunk.rows):
            raise ValueError(
                f"chunk {chunk.index}: {len(rows)} answer rows for {len(chunk.rows)} input rows"
            )
        merged = [{**given, **answer} for given, answer in zip(chunk.rows, rows, strict=True)]
        self._accept(chunk, merged)

    def fail(self, chunk: Chunk, reason: str) -> None:
        """Record that a chunk has no answer; its input rows are written with ``reason``."""
        self._accept(chunk, reason or "failed")

    def _accept(self, chunk: Chunk, result: list[dict[str, str]] | str) -> None:
        if self._spool is None:
            raise ValueError("the output is closed")
        if chunk.index < self._next or chunk.index in self._held:
            raise ValueError(f"chunk {chunk.index} was given twice")
        self._held[chunk.index] = (chunk, result)
        while self._next in self._held:
            ready, outcome = self._held.pop(self._next)
            self._spool_chunk(ready, outcome)
            self._next += 1

    def _spool_chunk(self, chunk: Chunk, outcome: list[dict[str, str]] | str) -> None:
        assert self._spool is not None
        rows = chunk.rows if isinstance(outcome, str) else outcome
        error = outcome if isinstance(outcome, str) else None
        if error is not None:
            self._failed.append(FailedChunk(chunk.first_row, chunk.last_row, error))
        for row in rows:
            for column in row:
                if column not in self._known:
                    self._known.add(column)
                    self._columns.append(column)
            self._spool_writer.writerow([error or "", *map(row.get, self._columns, _blanks)])
        self._rows += len(rows)

    def close(self, *, total_chunks: int | None = None) -> OutputSummary:
        """Write the output file from the spool and report it. ``total_chunks``, when given,
        is checked: a chunk never given is a :class:`ValueError`, like one still waiting for a
        chunk ahead of it."""
        if self._spool is None:
            raise ValueError("the output is closed")
        if self._held or (total_chunks is not None and self._next != total_chunks):
            raise ValueError(
                f"{self._next} chunks written of {total_chunks}; chunk {self._next} was never "
                f"given (results waiting behind it: {sorted(self._held)[:10]})"
            )
        self._spool.close()
        self._spool = None
        error_column = ERROR_COLUMN
        n = 2
        while error_column in self._known:
            error_column = f"{ERROR_COLUMN}_{n}"
            n += 1
        header = [*self._columns, error_column]
        try:
            if self.fmt is TableFormat.CSV:
                self._write_csv(header)
            else:
                self._write_xlsx(header)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        finally:
            self._spool_path.unlink(missing_ok=True)
        logger.debug(
            "wrote %s: %d rows, %d failed chunks", self.path, self._rows, len(self._failed)
        )
        return OutputSummary(self._rows, self._next, tuple(header), tuple(self._failed))

    def _spooled(self, width: int) -> Iterator[list[str]]:
        """The spooled rows padded to the final header, the error cell last."""
        with self._spool_path.open(encoding="utf-8", newline="") as spool:
            for error, *cells in csv.reader(spool):
                yield [*cells, *[""] * (width - 1 - len(cells)), error]

    def _write_csv(self, header: list[str]) -> None:
        with self.path.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(self._spooled(len(header)))

    def _write_xlsx(self, header: list[str]) -> None:
        if self._rows + 1 > XLSX_MAX_ROWS:
            raise TableError(
                f"{self._rows} rows do not fit in an XLSX sheet ({XLSX_MAX_ROWS - 1} at most)"
            )
        if len(header) > XLSX_MAX_COLUMNS:
            raise TableError(
                f"{len(header)} columns do not fit in an XLSX sheet ({XLSX_MAX_COLUMNS} at most)"
            )
        workbook = xlsxwriter.Workbook(str(self.path), {"constant_memory": True})
        try:
            sheet = workbook.add_worksheet()
            for col, name in enumerate(header):
                self._write_cell(sheet, 0, col, name)
            for row, cells in enumerate(self._spooled(len(header)), start=1):
                for col, text in enumerate(cells):
                    if text:
                        self._write_cell(sheet, row, col, text)
        finally:
            workbook.close()

    @staticmethod
    def _write_cell(sheet: Any, row: int, col: int, text: str) -> None:
        if len(text) > XLSX_MAX_CELL_CHARS:
            raise TableError(
                f"row {row}, column {col + 1}: {len(text)} characters do not fit in an XLSX "
                f"cell ({XLSX_MAX_CELL_CHARS} at most)"
            )
        number = _xlsx_number(text)
        if number is None:
            sheet.write_string(row, col, text)
        else:
            sheet.write_number(row, col, number)

    def abort(self) -> None:
        """Drop everything written so far (the spool and any partial output)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._spool_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._spool is not None:
            self.abort()
