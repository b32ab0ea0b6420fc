"""The table side of transform_table: chunks read from real CSV and XLSX files, prompts the
simulator answers, answers checked, and the output assembled in order on disk."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import fastexcel
import pytest
import xlsxwriter

from section_worker.kinds.tables import (
    MAX_INSTRUCTION_CHARS,
    AnswerError,
    Chunk,
    FailedChunk,
    OutputWriter,
    TableError,
    TableFormat,
    chunk_prompt,
    iter_chunks,
    parse_answer,
    read_columns,
)
from section_worker.platform_client import AnswerStatus
from section_worker.platform_session import PlatformSession
from simulator.answers import answer_for, computed
from tests.helpers import assert_eventually
from tests.section_worker.conftest import ASSET, CREDENTIALS, MakeClient, Sim

CSV = TableFormat.CSV
XLSX = TableFormat.XLSX
ROOT = Path(__file__).resolve().parents[2]


def write_csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return path


def write_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    workbook = xlsxwriter.Workbook(str(path))
    for name, rows in sheets.items():
        sheet = workbook.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if isinstance(value, str):
                    sheet.write_string(r, c, value)  # never read as a formula
                elif value is not None:
                    sheet.write(r, c, value)
    workbook.close()
    return path


def numbered(n: int) -> list[list[str]]:
    """A header and ``n`` rows whose cells say which row they are."""
    return [["id", "name"], *[[str(i), f"row {i}"] for i in range(1, n + 1)]]


def read_back(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def chunks_of(path: Path, fmt: TableFormat, size: int) -> list[Chunk]:
    return list(iter_chunks(path, fmt, size))


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "size", "spans"),
    [
        (10, 4, [(1, 4), (5, 8), (9, 10)]),
        (8, 4, [(1, 4), (5, 8)]),
        (3, 10, [(1, 3)]),
        (3, 1, [(1, 1), (2, 2), (3, 3)]),
    ],
)
def test_chunks_cover_every_row_once_at_fixed_boundaries(
    tmp_path: Path, rows: int, size: int, spans: list[tuple[int, int]]
) -> None:
    path = write_csv(tmp_path / "in.csv", numbered(rows))

    chunks = chunks_of(path, CSV, size)

    assert [(c.index, c.first_row, c.last_row) for c in chunks] == [
        (i, first, last) for i, (first, last) in enumerate(spans)
    ]
    for chunk in chunks:
        assert [row["id"] for row in chunk.rows] == [
            str(i) for i in range(chunk.first_row, chunk.last_row + 1)
        ]
    assert chunks[0].rows[0] == {"id": "1", "name": "row 1"}


def test_a_csv_is_read_as_text_with_its_quirks(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        "\ufeffid,,note\r\n"  # a BOM, a blank column name, CRLF line ends
        '1,2,"two\nlines, and a comma"\r\n'
        "\r\n"  # a blank line is no row
        "3\r\n"  # a short row is padded
        "4,5,6,,\r\n".encode()  # empty extra cells are dropped
    )

    (chunk,) = chunks_of(path, CSV, 10)

    assert read_columns(path, CSV) == ["id", "column_2", "note"]
    assert chunk.rows == [
        {"id": "1", "column_2": "2", "note": "two\nlines, and a comma"},
        {"id": "3", "column_2": "", "note": ""},
        {"id": "4", "column_2": "5", "note": "6"},
    ]
    assert (chunk.first_row, chunk.last_row) == (1, 3)


def test_a_row_longer_than_the_header_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [*numbered(5), ["6", "row 6", "surplus"]])

    chunks = iter_chunks(path, CSV, 2)
    assert [c.last_row for c in (next(chunks), next(chunks))] == [2, 4]
    with pytest.raises(TableError, match=r"row 6 has 3 cells, the header 2 columns"):
        list(chunks)


def test_a_csv_that_is_not_utf8_is_an_error_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,name\n1,caf\xe9\n")

    with pytest.raises(TableError, match=r"row 1: the CSV is not UTF-8"):
        chunks_of(path, CSV, 10)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no header row"),
        ("\n\n", "no header row"),
        ("id,name\n", "no data rows"),
        ("id,name,id\n1,2,3\n", r"more than once: \['id'\]"),
    ],
)
def test_a_csv_without_usable_header_or_rows_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(content)

    with pytest.raises(TableError, match=message):
        chunks_of(path, CSV, 10)


def test_too_many_columns_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "wide.csv", [[f"c{i}" for i in range(10_000)], ["x"] * 10_000])

    with pytest.raises(TableError, match="10000 columns, over the limit of 1000"):
        chunks_of(path, CSV, 10)
    (chunk,) = iter_chunks(path, CSV, 10, max_columns=10_000)
    assert len(chunk.rows[0]) == 10_000


def test_an_xlsx_sheet_is_read_as_text_with_mixed_types(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "in.xlsx",
        {
            "Data": [
                ["amount", "label", "flag"],
                [12, "a", True],
                ["twelve", 2.5, False],
                [None, None, None],  # an empty row inside the sheet stays a row
                [7, "b", None],
            ],
            "Other": [["x"], ["y"]],
        },
    )

    chunks = chunks_of(path, XLSX, 3)

    assert read_columns(path, XLSX) == ["amount", "label", "flag"]
    assert [(c.first_row, c.last_row) for c in chunks] == [(1, 3), (4, 4)]
    assert [row for c in chunks for row in c.rows] == [
        {"amount": "12", "label": "a", "flag": "true"},
        {"amount": "twelve", "label": "2.5", "flag": "false"},
        {"amount": "", "label": "", "flag": ""},
        {"amount": "7", "label": "b", "flag": ""},
    ]
    (other,) = iter_chunks(path, XLSX, 10, sheet="Other")
    assert other.rows == [{"x": "y"}]


def test_a_bad_xlsx_is_a_clear_error(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"Data": [["a"], ["1"]], "Blank": []})
    not_xlsx = write_csv(tmp_path / "in.xlsx.csv", numbered(2))

    with pytest.raises(TableError, match="no sheet named 'Nope'"):
        list(iter_chunks(path, XLSX, 10, sheet="Nope"))
    with pytest.raises(TableError, match="the sheet is empty"):
        list(iter_chunks(path, XLSX, 10, sheet="Blank"))
    with pytest.raises(TableError, match="not a readable XLSX"):
        chunks_of(not_xlsx, XLSX, 10)
    with pytest.raises(TableError, match=r"over the limit of 100 .*send the table as CSV"):
        list(iter_chunks(path, XLSX, 10, max_xlsx_bytes=100))


# --- prompt and answer -------------------------------------------------------------------------


def test_the_prompt_is_stable_json_the_simulator_answers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["qty", "price", "name"], ["2", "3.5", "bolt"]])
    (chunk,) = chunks_of(path, CSV, 10)
    columns = read_columns(path, CSV)

    prompt = chunk_prompt("  Add the total.  ", columns, chunk.rows)

    assert prompt == chunk_prompt("Add the total.", columns, [dict(chunk.rows[0])])
    payload = json.loads(prompt)
    assert payload["kind"] == "transform_rows"
    assert payload["instruction"] == "Add the total."
    assert payload["columns"] == ["qty", "price", "name"]
    assert payload["rows"] == [{"qty": "2", "price": "3.5", "name": "bolt"}]
    assert list(payload["rows"][0]) == columns  # column order, not sorted
    answer, _ = answer_for(ASSET, prompt, 0.004, 0.24)
    rows = parse_answer(answer, 1)
    assert rows == [{"qty": "2", "price": "3.5", "name": "bolt", "_computed": "5.5"}]


@pytest.mark.parametrize(
    ("instruction", "message"),
    [("   ", "the instruction is empty"), ("x" * (MAX_INSTRUCTION_CHARS + 1), "over the limit")],
)
def test_an_empty_or_long_instruction_is_refused(instruction: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        chunk_prompt(instruction, ["a"], [{"a": "1"}])


def test_answers_in_the_accepted_shapes_become_text_cells() -> None:
    rows = [{"s": "x", "i": 3, "f": 2.5, "t": True, "n": None}, {"f": 1e20, "t": False}]
    expected = [
        {"s": "x", "i": "3", "f": "2.5", "t": "true", "n": ""},
        {"f": "1e+20", "t": "false"},
    ]

    assert parse_answer(json.dumps({"rows": rows}), 2) == expected
    assert parse_answer(json.dumps(rows), 2) == expected
    assert parse_answer(f"```json\n{json.dumps({'rows': rows})}\n```", 2) == expected


@pytest.mark.parametrize(
    ("answer", "message", "row"),
    [
        ("Sure! Here are the rows.", r"rows 11-12: the answer is not JSON", None),
        ('{"result": []}', r"rows 11-12: the answer is neither", None),
        ('{"rows": [{"a": 1}]}', r"rows 11-12: the answer has 1 rows, 2 were sent", None),
        ('{"rows": [{"a": 1}, [1]]}', r"rows 11-12: row 12 is a list, not an object", 12),
        ('[{"a": {"b": 1}}, {}]', r"row 11, column 'a' holds a dict", 11),
        ('[{"a": 1}, {"a": NaN}]', r"row 12, column 'a': nan is no number", 12),
        ('[{"a": 1}, {" ": 2}]', r"row 12 has a column without a name", 12),
    ],
)
def test_a_bad_answer_is_an_error_naming_the_rows(
    answer: str, message: str, row: int | None
) -> None:
    with pytest.raises(AnswerError, match=message) as raised:
        parse_answer(answer, 2, first_row=11)

    assert (raised.value.first_row, raised.value.last_row, raised.value.row) == (11, 12, row)


async def test_a_chunk_round_trips_through_the_simulator(
    tmp_path: Path, sim: Sim, make_client: MakeClient
) -> None:
    path = write_csv(
        tmp_path / "in.csv", [["label", "a", "b"], ["x", "1", "2"], ["only text", "", ""]]
    )
    (chunk,) = chunks_of(path, CSV, 10)
    client = make_client()
    session = PlatformSession(client, (await client.authenticate(CREDENTIALS)).value)

    conv_id = await session.create_conversation(ASSET)
    message_id = await session.send_prompt(
        conv_id, chunk_prompt("Sum the numbers.", read_columns(path, CSV), chunk.rows)
    )
    answer = await assert_eventually(
        lambda: session.poll(conv_id, message_id),
        lambda a: a.status is not AnswerStatus.IN_PROGRESS,
        what="answer",
    )

    assert answer.status is AnswerStatus.SUCCESS
    rows = parse_answer(answer.response, len(chunk.rows), first_row=chunk.first_row)
    assert [row["_computed"] for row in rows] == [str(computed(r)) for r in chunk.rows]
    assert [row["_computed"] for row in rows] == ["3", "ONLY TEXT"]


# --- writing -----------------------------------------------------------------------------------


def transformed(chunk: Chunk) -> list[dict[str, str]]:
    """What an answer could say for a chunk: a new column, and one input column rewritten."""
    return [{"name": row["name"].upper(), "double": str(2 * int(row["id"]))} for row in chunk.rows]


def test_results_out_of_order_are_written_in_order(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", numbered(10))
    chunks = chunks_of(source, CSV, 3)
    out = tmp_path / "out.csv"

    with OutputWriter(out, CSV, read_columns(source, CSV)) as writer:
        writer.add(chunks[2], transformed(chunks[2]))
        writer.add(chunks[1], transformed(chunks[1]))
        assert (writer.next_index, writer.held) == (0, 2)
        writer.add(chunks[0], transformed(chunks[0]))
        assert (writer.next_index, writer.held) == (3, 0)
        writer.add(chunks[3], transformed(chunks[3]))
        summary = writer.close(total_chunks=4)

    assert read_back(out) == [
        ["id", "name", "double", "_error"],
        *[[str(i), f"ROW {i}", str(2 * i), ""] for i in range(1, 11)],
    ]
    assert (summary.rows, summary.chunks, summary.failed) == (10, 4, ())
    assert summary.columns == ("id", "name", "double", "_error")
    assert not (tmp_path / "out.csv.rows").exists()


def test_a_failed_chunk_is_written_as_input_with_its_reason(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", numbered(6))
    chunks = chunks_of(source, CSV, 2)
    out = tmp_path / "out.csv"

    with OutputWriter(out, CSV, read_columns(source, CSV)) as writer:
        writer.fail(chunks[0], "every asset throttled")
        writer.add(chunks[2], transformed(chunks[2]))
        writer.fail(chunks[1], "rows 3-4: the answer has 1 rows, 2 were sent")
        summary = writer.close(total_chunks=3)

    assert summary.failed == (
        FailedChunk(1, 2, "every asset throttled"),
        FailedChunk(3, 4, "rows 3-4: the answer has 1 rows, 2 were sent"),
    )
    # The column the later answer adds is empty on the failed rows written before it.
    assert read_back(out) == [
        ["id", "name", "double", "_error"],
        ["1", "row 1", "", "every asset throttled"],
        ["2", "row 2", "", "every asset throttled"],
        ["3", "row 3", "", "rows 3-4: the answer has 1 rows, 2 were sent"],
        ["4", "row 4", "", "rows 3-4: the answer has 1 rows, 2 were sent"],
        ["5", "ROW 5", "10", ""],
        ["6", "ROW 6", "12", ""],
    ]


def test_the_error_column_does_not_take_an_input_columns_name(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    chunk = Chunk(0, 1, 1, [{"_error": "theirs"}])

    with OutputWriter(out, CSV, ["_error"]) as writer:
        writer.fail(chunk, "ours")
        summary = writer.close()

    assert summary.columns == ("_error", "_error_2")
    assert read_back(out) == [["_error", "_error_2"], ["theirs", "ours"]]


def test_misuse_of_the_writer_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    chunks = [Chunk(i, i + 1, i + 1, [{"a": str(i)}]) for i in range(3)]

    with OutputWriter(out, CSV, ["a"]) as writer:
        writer.add(chunks[0], [{"a": "x"}])
        with pytest.raises(ValueError, match="chunk 0 was given twice"):
            writer.add(chunks[0], [{"a": "x"}])
        with pytest.raises(ValueError, match="chunk 1: 2 answer rows for 1 input rows"):
            writer.add(chunks[1], [{"a": "x"}, {"a": "y"}])
        writer.add(chunks[2], [{"a": "z"}])
        with pytest.raises(ValueError, match=r"chunk 1 was never given .*behind it: \[2\]"):
            writer.close()
    with OutputWriter(tmp_path / "short.csv", CSV, ["a"]) as short:
        short.add(chunks[0], [{"a": "x"}])
        with pytest.raises(ValueError, match="1 chunks written of 3"):
            short.close(total_chunks=3)

    # Leaving the block without a successful close removes the spool and the output.
    assert list(tmp_path.iterdir()) == []


def test_a_csv_round_trips_through_the_writer(tmp_path: Path) -> None:
    rows = [["text", "n"], ['quote " and, comma', "1"], ["line\nbreak", ""], ["ünï", "-2.5"]]
    source = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"

    with OutputWriter(out, CSV, read_columns(source, CSV)) as writer:
        for chunk in iter_chunks(source, CSV, 2):
            writer.add(chunk, [{} for _ in chunk.rows])
        writer.close()

    assert [row[:-1] for row in read_back(out)] == rows
    assert [row for c in iter_chunks(out, CSV, 10) for row in c.rows] == [
        {"text": t, "n": n, "_error": ""} for t, n in rows[1:]
    ]


def test_an_xlsx_round_trips_with_numbers_as_numbers(tmp_path: Path) -> None:
    source = write_xlsx(
        tmp_path / "in.xlsx",
        {"S": [["code", "qty", "note"], ["007", 3, "=1+1"], ["A-1", 2.5, "1e5"]]},
    )
    out = tmp_path / "out.xlsx"

    with OutputWriter(out, XLSX, read_columns(source, XLSX)) as writer:
        for chunk in iter_chunks(source, XLSX, 1):
            writer.add(chunk, [{"total": row["qty"]} for row in chunk.rows])
        summary = writer.close()

    assert summary.columns == ("code", "qty", "note", "total", "_error")
    assert [row for c in iter_chunks(out, XLSX, 10) for row in c.rows] == [
        {"code": "007", "qty": "3", "note": "=1+1", "total": "3", "_error": ""},
        {"code": "A-1", "qty": "2.5", "note": "1e5", "total": "2.5", "_error": ""},
    ]
    # Read with the types the file holds: numbers are numbers, "007" and "=1+1" are text.
    typed = fastexcel.read_excel(out).load_sheet(0).to_polars()
    assert typed["qty"].to_list() == [3.0, 2.5]
    assert typed["code"].to_list() == ["007", "A-1"]
    assert typed["note"].to_list() == ["=1+1", "1e5"]


def test_an_xlsx_cell_over_its_limit_fails_the_close_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.xlsx"
    writer = OutputWriter(out, XLSX, ["a"])
    writer.add(Chunk(0, 1, 1, [{"a": "x"}]), [{"a": "y" * 40_000}])

    with pytest.raises(TableError, match=r"row 1, column 1: 40000 characters"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


# --- a large file ------------------------------------------------------------------------------

_PIPELINE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from section_worker.kinds.tables import OutputWriter, TableFormat, iter_chunks, read_columns

    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    columns = read_columns(source, TableFormat.CSV)
    def status(field):  # in KiB (Linux)
        return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0])

    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    start = status("VmRSS")
    chunks = 0
    with OutputWriter(out, TableFormat.CSV, columns) as writer:
        for chunk in iter_chunks(source, TableFormat.CSV, 1000):
            if chunk.index % 2:  # every other chunk a step late: the writer holds it
                held = chunk
                continue
            writer.add(chunk, [{"twice": str(2 * int(r["id"]))} for r in chunk.rows])
            if chunk.index:
                writer.add(held, [{"twice": str(2 * int(r["id"]))} for r in held.rows])
            chunks += 1
        if chunk.index % 2:
            writer.add(held, [{"twice": str(2 * int(r["id"]))} for r in held.rows])
        summary = writer.close()
    peak = status("VmHWM")
    print(json.dumps({"rows": summary.rows, "grew_kib": peak - start}))
    """
)


@pytest.mark.timeout(600)
def test_a_50_mb_csv_goes_through_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    line = "{0},Client {0},{1}.25,free text that pads row {0} to a realistic width\n"
    rows = 0
    with source.open("w") as file:
        file.write("id,name,value,notes\n")
        while file.tell() < 50 * 1024 * 1024:
            file.write("".join(line.format(rows + i, (rows + i) % 997) for i in range(1000)))
            rows += 1000
    out = tmp_path / "out.csv"

    done = subprocess.run(
        [sys.executable, "-c", _PIPELINE, str(source), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    report = json.loads(done.stdout)
    assert report["rows"] == rows
    # Rows as Python dicts take several times their size on disk: a reader or writer that
    # held the file would grow by hundreds of MiB; one chunk at a time stays within a few.
    assert report["grew_kib"] < 32 * 1024, report
    with out.open(newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == ["id", "name", "value", "notes", "twice", "_error"]
        for expected, row in enumerate(reader):
            if expected % 99_991 == 0 or expected == rows - 1:
                assert (row[0], row[4]) == (str(expected), str(2 * expected))
        assert expected == rows - 1
