"""The ``profile_table`` job kind on generated files: every figure of the profile is compared
with what the file was made of (CSV with quoting, ragged rows, bad encodings; .xlsx; Parquet),
and :func:`spool` streams to disk and leaves nothing behind when it fails."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import textwrap
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from common.errors import InvalidInput, TooLarge
from section_worker.kinds import profile_table
from section_worker.kinds.profile_table import (
    ProfileOptions,
    detect_format,
    profile_file,
    spool,
)

OPTIONS = ProfileOptions()
COLUMN_KEYS = {
    "name", "type", "count", "nulls", "invalid", "distinct", "distinct_method", "min", "max",
    "mean", "std", "quantiles", "quantiles_method", "quantiles_sample_size", "top_values",
    "length",
}  # fmt: skip


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def column(profile: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in profile["columns"] if c["name"] == name)


def linear_quantile(values: Sequence[float], q: float) -> float:
    """The quantile with linear interpolation between closest ranks."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def check_shape(profile: dict[str, Any]) -> None:
    """Every profile is strict JSON and every column has the same keys."""
    json.dumps(profile, allow_nan=False)
    assert set(profile) == {"file", "type_inference", "columns", "malformed"}
    for col in profile["columns"]:
        assert set(col) == COLUMN_KEYS
        assert col["count"] + col["nulls"] + col["invalid"] == profile["file"]["rows"]


# --- CSV: figures -----------------------------------------------------------------------------


def test_csv_numbers_text_dates_and_nulls_match_what_was_written(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = []
    for i in range(500):
        amount = "" if i % 10 == 0 else f"{rng.uniform(-50, 950):.2f}"
        city = rng.choice(["Paris", "Oslo", "Lima", "Rome"]) if i % 7 else ""
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(366))
        stamp = datetime(2024, 5, 1, 8, 30) + timedelta(seconds=rng.randrange(10**6))
        flag = rng.choice(["true", "false", "TRUE"])
        rows.append((str(i), amount, city, day.isoformat(), stamp.isoformat(), flag))
    text = "id,amount,city,day,stamp,flag\n" + "".join(",".join(r) + "\n" for r in rows)
    profile = profile_file(write(tmp_path / "t.csv", text), options=OPTIONS)
    check_shape(profile)

    assert profile["file"] == {
        "format": "csv", "size_bytes": len(text), "rows": 500, "columns": 6,
        "encoding": "utf-8", "delimiter": ",", "sheet": None, "sheets": None,
    }  # fmt: skip
    assert profile["type_inference"] == {"method": "values", "rows": 500, "min_share": 0.9}
    assert [c["type"] for c in profile["columns"]] == [
        "integer", "float", "string", "date", "datetime", "boolean",
    ]  # fmt: skip

    ids = column(profile, "id")
    assert (ids["count"], ids["nulls"], ids["distinct"], ids["min"], ids["max"]) == (
        500, 0, 500, 0, 499,
    )  # fmt: skip
    assert ids["mean"] == pytest.approx(249.5)
    assert ids["quantiles"]["p50"] == pytest.approx(249.5)

    amounts = [float(r[1]) for r in rows if r[1]]
    amount = column(profile, "amount")
    assert (amount["count"], amount["nulls"], amount["invalid"]) == (450, 50, 0)
    assert amount["distinct"] == len(set(amounts))
    assert amount["distinct_method"] == "exact"
    assert amount["min"] == min(amounts) and amount["max"] == max(amounts)
    assert amount["mean"] == pytest.approx(statistics.mean(amounts))
    assert amount["std"] == pytest.approx(statistics.stdev(amounts))
    assert list(amount["quantiles"]) == ["p1", "p5", "p25", "p50", "p75", "p95", "p99"]
    for name, q in zip(amount["quantiles"], OPTIONS.quantiles, strict=True):
        assert amount["quantiles"][name] == pytest.approx(linear_quantile(amounts, q))
    assert (amount["quantiles_method"], amount["quantiles_sample_size"]) == ("exact", None)
    assert amount["top_values"] is None and amount["length"] is None

    cities = Counter(r[2] for r in rows if r[2])
    city = column(profile, "city")
    assert (city["count"], city["nulls"], city["distinct"]) == (sum(cities.values()), 72, 4)
    expected_top = sorted(cities.items(), key=lambda vc: (-vc[1], vc[0]))
    assert city["top_values"] == [{"value": v, "count": n} for v, n in expected_top]
    lengths = [len(r[2]) for r in rows if r[2]]
    assert city["length"] == {
        "min": min(lengths), "max": max(lengths), "mean": pytest.approx(statistics.mean(lengths)),
    }  # fmt: skip
    assert city["min"] is None and city["quantiles"] is None

    day = column(profile, "day")
    assert day["min"] == min(r[3] for r in rows) and day["max"] == max(r[3] for r in rows)
    assert day["distinct"] == len({r[3] for r in rows})
    stamp = column(profile, "stamp")
    assert stamp["min"] == min(r[4] for r in rows) and stamp["max"] == max(r[4] for r in rows)

    flags = Counter(r[5].lower() == "true" for r in rows)
    flag = column(profile, "flag")
    assert flag["distinct"] == 2
    assert flag["top_values"] == sorted(
        [{"value": True, "count": flags[True]}, {"value": False, "count": flags[False]}],
        key=lambda vc: -vc["count"],
    )
    assert profile["malformed"] == {
        "ragged_rows": 0, "ragged_samples": [], "invalid_values": 0, "invalid_samples": [],
    }  # fmt: skip


def test_the_documented_example_is_what_profile_file_returns(tmp_path: Path) -> None:
    doc = textwrap.dedent(profile_table.__doc__ or "")
    csv_text = doc.split("``min_type_share=0.75``::\n\n", 1)[1].split("\n\nthe profile is", 1)[0]
    documented = doc.split("the profile is::\n", 1)[1].split("\n\n``row``", 1)[0]
    path = write(tmp_path / "example.csv", textwrap.dedent(csv_text) + "\n")
    profile = profile_file(path, options=ProfileOptions(min_type_share=0.75))
    assert profile == json.loads(documented)


def test_top_values_keep_the_k_most_frequent_ties_by_value(tmp_path: Path) -> None:
    text = "w\n" + "".join(f"{w}\n" for w in ["b", "a", "c", "a", "b", "d", "e", "e"])
    profile = profile_file(write(tmp_path / "t.csv", text), options=ProfileOptions(top_k=3))
    assert column(profile, "w")["top_values"] == [
        {"value": "a", "count": 2}, {"value": "b", "count": 2}, {"value": "e", "count": 2},
    ]  # fmt: skip
    none = profile_file(tmp_path / "t.csv", options=ProfileOptions(top_k=0))
    assert column(none, "w")["top_values"] is None


def test_null_values_option_and_an_empty_column(tmp_path: Path) -> None:
    text = "a,b,c\n1,NA,\n2,x,\nNA,y,\n"
    plain = profile_file(write(tmp_path / "t.csv", text), options=ProfileOptions())
    assert column(plain, "a")["type"] == "string"  # "NA" is text unless said otherwise
    empty = column(plain, "c")
    assert (empty["type"], empty["count"], empty["nulls"], empty["distinct"]) == ("empty", 0, 3, 0)
    told = profile_file(tmp_path / "t.csv", options=ProfileOptions(null_values=("NA",)))
    a = column(told, "a")
    assert (a["type"], a["count"], a["nulls"], a["mean"]) == ("integer", 2, 1, 1.5)
    assert column(told, "b")["nulls"] == 1


def test_nan_counts_as_missing_and_infinity_is_no_statistic(tmp_path: Path) -> None:
    text = "x\n1.5\nNaN\n2.5\ninf\n"
    x = column(profile_file(write(tmp_path / "t.csv", text), options=OPTIONS), "x")
    assert (x["type"], x["count"], x["nulls"], x["invalid"]) == ("float", 3, 1, 0)
    assert (x["min"], x["max"], x["mean"]) == (1.5, None, None)


# --- CSV: types and malformed rows ------------------------------------------------------------


def test_values_that_do_not_fit_the_column_type_are_counted_and_located(tmp_path: Path) -> None:
    lines = ["n,d,word"] + [f"{i},2024-02-{i % 28 + 1:02d},w{i}" for i in range(1, 20)]
    lines[4] = "oops,2024-02-05,w4"  # line 5, row 4
    lines[9] = "9,not a date,w9"  # line 10, row 9
    lines[15] = "1.5,2024-02-16,w15"  # a float among the integers
    text = "\n".join(lines) + "\n"
    profile = profile_file(write(tmp_path / "t.csv", text), options=ProfileOptions())
    check_shape(profile)
    n = column(profile, "n")
    # 18 values parse as floats, 17 as integers: float parses the most and 18/19 >= 0.9.
    assert (n["type"], n["count"], n["invalid"]) == ("float", 18, 1)
    d = column(profile, "d")
    assert (d["type"], d["count"], d["invalid"]) == ("date", 18, 1)
    assert profile["malformed"]["invalid_values"] == 2
    assert profile["malformed"]["invalid_samples"] == [
        {"line": 5, "row": 4, "column": "n", "value": "oops", "expected_type": "float"},
        {"line": 10, "row": 9, "column": "d", "value": "not a date", "expected_type": "date"},
    ]
    # Under the share, the column is text and nothing is invalid.
    strict = profile_file(tmp_path / "t.csv", options=ProfileOptions(min_type_share=0.99))
    assert column(strict, "n")["type"] == "string"
    assert column(strict, "n")["invalid"] == 0
    assert strict["malformed"]["invalid_values"] == 0


def test_integers_win_over_floats_only_when_every_number_is_whole(tmp_path: Path) -> None:
    text = "a,b\n1,1\n2,2.5\n3,3\n"
    profile = profile_file(write(tmp_path / "t.csv", text), options=OPTIONS)
    assert column(profile, "a")["type"] == "integer"
    assert column(profile, "b")["type"] == "float"
    assert column(profile, "b")["invalid"] == 0


def test_ragged_rows_are_counted_located_and_still_profiled(tmp_path: Path) -> None:
    text = (
        "a,b,c\n"  # line 1
        "1,x,10\n"  # 2 / row 1
        "2,y\n"  # 3 / row 2: a field short
        "3,z,30,extra\n"  # 4 / row 3: one too many
        "\n"  # 5 / row 4: blank line, one field
        "4,w,40\n"  # 6 / row 5
        "5,v,50,,\n"  # 7 / row 6: two empty extra fields still count
    )
    profile = profile_file(write(tmp_path / "t.csv", text), options=OPTIONS)
    check_shape(profile)
    assert profile["file"]["rows"] == 6
    assert profile["malformed"]["ragged_rows"] == 4
    assert profile["malformed"]["ragged_samples"] == [
        {"line": 3, "row": 2, "fields": 2, "expected_fields": 3},
        {"line": 4, "row": 3, "fields": 4, "expected_fields": 3},
        {"line": 5, "row": 4, "fields": 1, "expected_fields": 3},
        {"line": 7, "row": 6, "fields": 5, "expected_fields": 3},
    ]
    c = column(profile, "c")
    assert (c["count"], c["nulls"], c["min"], c["max"]) == (4, 2, 10, 50)
    few = profile_file(tmp_path / "t.csv", options=ProfileOptions(malformed_samples=1))
    assert few["malformed"]["ragged_rows"] == 4
    assert len(few["malformed"]["ragged_samples"]) == 1


def test_quoted_delimiters_and_newlines_are_values_not_structure(tmp_path: Path) -> None:
    text = (
        "id,note,n\n"  # line 1
        '1,"a, b",1\n'  # 2
        '2,"line one\nline two, with comma",2\n'  # 3-4
        '3,"say ""hi"", then\n\nleave",3\n'  # 5-7
        "4,plain,4,surplus\n"  # 8: ragged, after two multi-line records
        '5,"x",5\n'  # 9
        '6,"",6\n'  # 10: an empty quoted field is empty
        "7,oops,seven\n"  # 11: invalid integer
    )
    profile = profile_file(
        write(tmp_path / "t.csv", text), options=ProfileOptions(min_type_share=0.8)
    )
    check_shape(profile)
    assert profile["file"]["rows"] == 7
    note = column(profile, "note")
    values = {t["value"] for t in note["top_values"]}
    assert values == {
        "a, b",
        "line one\nline two, with comma",
        'say "hi", then\n\nleave',
        "plain",
        "x",
        "oops",
    }
    assert note["nulls"] == 1
    assert profile["malformed"]["ragged_samples"] == [
        {"line": 8, "row": 4, "fields": 4, "expected_fields": 3}
    ]
    assert profile["malformed"]["invalid_samples"] == [
        {"line": 11, "row": 7, "column": "n", "value": "seven", "expected_type": "integer"}
    ]


def test_malformed_counts_are_exact_across_read_chunks(tmp_path: Path) -> None:
    """Thousands of rows read 4 KiB at a time, multi-line records and bad rows spread over
    chunk boundaries: every count and line is the one written."""
    rng = random.Random(11)
    out = ["k,v,t"]
    line = 1
    ragged_lines: list[int] = []
    invalid_lines: list[int] = []
    rows = 0
    for i in range(3000):
        rows += 1
        roll = rng.random()
        if roll < 0.01:
            out.append(f"{i},{i}")
            ragged_lines.append(line + 1)
        elif roll < 0.02:
            out.append(f"{i},{i},x,y")
            ragged_lines.append(line + 1)
        elif roll < 0.03:
            out.append(f"{i},bad,t")
            invalid_lines.append(line + 1)
        elif roll < 0.1:
            out.append(f'{i},{i},"multi\nline, {i}"')
        else:
            out.append(f"{i},{i},t{i % 5}")
        line += out[-1].count("\n") + 1
    text = "\n".join(out) + "\n"
    options = ProfileOptions(read_chunk_bytes=4096, malformed_samples=1000)
    profile = profile_file(write(tmp_path / "t.csv", text), options=options)
    assert profile["file"]["rows"] == rows
    assert profile["malformed"]["ragged_rows"] == len(ragged_lines)
    assert [s["line"] for s in profile["malformed"]["ragged_samples"]] == ragged_lines
    v = column(profile, "v")
    assert (v["type"], v["invalid"]) == ("integer", len(invalid_lines))
    assert [s["line"] for s in profile["malformed"]["invalid_samples"]] == invalid_lines
    # The same file read in the default, larger chunks gives the same profile.
    assert (
        profile_file(tmp_path / "t.csv", options=ProfileOptions(malformed_samples=1000)) == profile
    )


def test_a_quote_inside_an_unquoted_field_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'a,b\n1,ab"c\n2,d\n')
    with pytest.raises(InvalidInput, match="csv file could not be read"):
        profile_file(path, options=OPTIONS)


# --- CSV: text, delimiter, empty ----------------------------------------------------------------


def test_non_utf8_text_is_refused_naming_the_byte_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "name,city\nAnn,Paris\nZoé,".encode("latin-1") + b"Lyon\n")
    with pytest.raises(InvalidInput, match=r"not UTF-8.*0xe9 at offset 22 \(line 3\)"):
        profile_file(path, options=OPTIONS)


def test_a_character_cut_by_a_read_boundary_is_still_utf8(tmp_path: Path) -> None:
    # 1 MiB reads: "é" (2 bytes) straddles the first boundary.
    text = "w\n" + "a" * (1024 * 1024 - 3) + "é\nb\n"
    profile = profile_file(write(tmp_path / "t.csv", text), options=OPTIONS)
    assert profile["file"]["rows"] == 2
    truncated = write(tmp_path / "cut.csv", b"w\nab" + "é".encode()[:1])
    with pytest.raises(InvalidInput, match="ends inside a character"):
        profile_file(truncated, options=OPTIONS)


def test_nul_bytes_mean_not_a_text_table(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", b"a,b\n1,\x002\n")
    with pytest.raises(InvalidInput, match="NUL byte at offset 6"):
        profile_file(path, options=OPTIONS)


def test_empty_file_and_header_only_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="the file is empty"):
        profile_file(write(tmp_path / "empty.csv", b""), options=OPTIONS)
    with pytest.raises(InvalidInput, match=r"no rows \(only a header of 3 columns"):
        profile_file(write(tmp_path / "header.csv", "a,b,c\n"), options=OPTIONS)


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    text = "".join(delimiter.join(r) + "\n" for r in [("a", "b"), ("1", "x,y"), ("2", "z")])
    profile = profile_file(write(tmp_path / "t.csv", text), options=OPTIONS)
    assert profile["file"]["delimiter"] == delimiter
    assert [c["name"] for c in profile["columns"]] == ["a", "b"]
    assert column(profile, "a")["max"] == 2


def test_a_given_delimiter_wins_over_sniffing(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a;b,c\n1;2,3\n")
    given = profile_file(path, options=ProfileOptions(delimiter=";"))
    assert [c["name"] for c in given["columns"]] == ["a", "b,c"]
    comma = profile_file(path, options=ProfileOptions(delimiter=","))
    assert [c["name"] for c in comma["columns"]] == ["a;b", "c"]


def test_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "\ufeffa,b\r\n1,x\r\n2,y\r\n".encode())
    profile = profile_file(path, options=OPTIONS)
    assert [c["name"] for c in profile["columns"]] == ["a", "b"]
    assert column(profile, "b")["top_values"] == [
        {"value": "x", "count": 1},
        {"value": "y", "count": 1},
    ]
    assert profile["malformed"]["ragged_rows"] == 0


# --- distinct and quantiles: exact or not -------------------------------------------------------


def test_distinct_is_exact_up_to_the_setting_and_approximate_above(tmp_path: Path) -> None:
    text = "word,n\n" + "".join(f"w{i % 3000},{i % 3000}\n" for i in range(9000))
    path = write(tmp_path / "t.csv", text)
    exact = profile_file(path, options=ProfileOptions(exact_distinct_max=5000))
    for name in ("word", "n"):
        assert (column(exact, name)["distinct"], column(exact, name)["distinct_method"]) == (
            3000,
            "exact",
        )
    assert len(column(exact, "word")["top_values"]) == 10
    rough = profile_file(path, options=ProfileOptions(exact_distinct_max=1000))
    for name in ("word", "n"):
        got = column(rough, name)
        assert got["distinct_method"] == "approximate"
        assert got["distinct"] == pytest.approx(3000, rel=0.15)
    assert column(rough, "word")["top_values"] is None  # counting each value is what is bounded


def test_quantiles_are_sampled_above_the_setting(tmp_path: Path) -> None:
    values = list(range(1, 10_001))
    path = write(tmp_path / "t.csv", "x\n" + "".join(f"{v}\n" for v in values))
    exact = column(profile_file(path, options=ProfileOptions()), "x")
    assert exact["quantiles"]["p50"] == pytest.approx(linear_quantile(values, 0.5))
    sampled = column(profile_file(path, options=ProfileOptions(exact_quantile_max=1000)), "x")
    assert (sampled["quantiles_method"], sampled["quantiles_sample_size"]) == ("sample", 1000)
    assert sampled["quantiles"]["p50"] == pytest.approx(5000, rel=0.01)
    assert sampled["quantiles"]["p99"] == pytest.approx(9900, rel=0.01)
    assert sampled["mean"] == exact["mean"] == pytest.approx(5000.5)  # over every value


def test_quantile_names_follow_the_options(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "x\n1\n2\n3\n4\n")
    x = column(profile_file(path, options=ProfileOptions(quantiles=(0.999, 0.5, 0.1))), "x")
    assert list(x["quantiles"]) == ["p10", "p50", "p99.9"]
    none = column(profile_file(path, options=ProfileOptions(quantiles=())), "x")
    assert none["quantiles"] is None


# --- .xlsx and Parquet --------------------------------------------------------------------------


def sample_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "qty": [1, 2, None, 4, 5],
            "price": [1.5, 2.25, 3.0, None, 10.0],
            "name": ["a", "b, c", None, "a", "x"],
            "day": [date(2024, 1, 5), None, date(2024, 2, 1), date(2023, 1, 1), date(2024, 3, 3)],
            "ok": [True, False, None, True, True],
        }
    )


def test_xlsx_sheet_is_profiled_and_selectable(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    import xlsxwriter  # the writer polars uses; a dev dependency

    with xlsxwriter.Workbook(path) as book:
        sample_frame().write_excel(book, worksheet="Data")
        pl.DataFrame({"v": ["1", "2", "three", "4", "5", "6", "7", "8", "9", "10"]}).write_excel(
            book, worksheet="Mixed"
        )
    profile = profile_file(path, options=OPTIONS)
    check_shape(profile)
    assert profile["file"]["format"] == "xlsx"
    assert (profile["file"]["sheet"], profile["file"]["sheets"]) == ("Data", ["Data", "Mixed"])
    assert profile["file"]["rows"] == 5
    types = {c["name"]: c["type"] for c in profile["columns"]}
    # A sheet stores dates as datetimes (no date-only cell type).
    assert types == {
        "qty": "integer",
        "price": "float",
        "name": "string",
        "day": "datetime",
        "ok": "boolean",
    }
    qty = column(profile, "qty")
    assert (qty["count"], qty["nulls"], qty["mean"]) == (4, 1, 3.0)
    assert column(profile, "price")["max"] == 10.0
    assert column(profile, "day")["min"] == "2023-01-01T00:00:00"
    assert column(profile, "name")["top_values"][0] == {"value": "a", "count": 2}

    mixed = profile_file(path, options=ProfileOptions(sheet="Mixed"))
    v = column(mixed, "v")
    assert (v["type"], v["count"], v["invalid"]) == ("integer", 9, 1)
    assert mixed["malformed"]["invalid_samples"] == [
        {"line": None, "row": 3, "column": "v", "value": "three", "expected_type": "integer"}
    ]
    with pytest.raises(InvalidInput, match=r"no sheet 'Nope'; its sheets are \['Data', 'Mixed'\]"):
        profile_file(path, options=ProfileOptions(sheet="Nope"))
    with pytest.raises(TooLarge, match="read whole"):
        profile_file(path, options=ProfileOptions(max_excel_bytes=100))


def test_a_damaged_workbook_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<not a workbook")
    with pytest.raises(InvalidInput, match="xlsx file could not be read"):
        profile_file(path, options=OPTIONS)


def test_parquet_keeps_its_own_types(tmp_path: Path) -> None:
    frame = sample_frame().with_columns(
        pl.col("name").cast(pl.Categorical).alias("cat"),
        pl.Series("f", [1.0, float("nan"), 2.0, 3.0, None]),
        pl.Series("stamp", [datetime(2024, 1, 1, 9)] * 5),
        pl.Series("raw", [b"x"] * 5),
        pl.Series("text_numbers", ["1", "2", "3", "4", "5"]),
        pl.Series("money", [Decimal("1.50"), Decimal("2.25"), None, None, None]),
        pl.Series("zoned", [datetime(2024, 1, 1, 9)] * 5).dt.replace_time_zone("Europe/Paris"),
        pl.Series("tags", [["a"], ["b", "c"], [], None, ["a"]]),
        pl.Series("point", [{"x": 1}, {"x": 2}, None, None, None]),
    )
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    profile = profile_file(path, options=OPTIONS)
    check_shape(profile)
    assert profile["file"]["format"] == "parquet"
    assert profile["type_inference"] == {"method": "schema", "rows": 5, "min_share": None}
    types = {c["name"]: c["type"] for c in profile["columns"]}
    assert types == {
        "qty": "integer", "price": "float", "name": "string", "day": "date", "ok": "boolean",
        "cat": "string", "f": "float", "stamp": "datetime", "raw": "other",
        "text_numbers": "string", "money": "float", "zoned": "datetime", "tags": "other",
        "point": "other",
    }  # fmt: skip
    f = column(profile, "f")
    assert (f["count"], f["nulls"], f["mean"]) == (3, 2, 2.0)
    assert column(profile, "cat")["top_values"][0] == {"value": "a", "count": 2}
    assert column(profile, "day")["max"] == "2024-03-03"
    for name, count in (("raw", 5), ("tags", 4), ("point", 2)):
        other = column(profile, name)  # counted only
        assert (other["count"], other["distinct"], other["distinct_method"]) == (count, None, None)
    money = column(profile, "money")
    assert (money["count"], money["mean"], money["max"]) == (2, 1.875, 2.25)
    assert column(profile, "zoned")["min"] == "2024-01-01T09:00:00+01:00"
    assert profile["malformed"]["invalid_values"] == 0

    empty = tmp_path / "empty.parquet"
    frame.head(0).write_parquet(empty)
    with pytest.raises(InvalidInput, match="no rows"):
        profile_file(empty, options=OPTIONS)


# --- format and limits --------------------------------------------------------------------------


def test_format_from_argument_content_type_extension_then_bytes(tmp_path: Path) -> None:
    parquet = tmp_path / "data.bin"
    pl.DataFrame({"a": [1]}).write_parquet(parquet)
    text = write(tmp_path / "upload", "a\n1\n")
    assert detect_format(parquet) == "parquet"
    assert detect_format(text) == "csv"
    assert detect_format(text, fmt="CSV") == "csv"
    assert detect_format(text, content_type="text/csv; charset=utf-8") == "csv"
    assert detect_format(write(tmp_path / "x.tsv", "a\n")) == "csv"
    # The declared format has to fit the bytes.
    with pytest.raises(InvalidInput, match="declared parquet, but its content is not a parquet"):
        detect_format(text, fmt="parquet")
    with pytest.raises(InvalidInput, match="declared csv, but its content is parquet"):
        detect_format(parquet, content_type="text/csv")
    with pytest.raises(InvalidInput, match="format 'json' is not one of csv, xlsx, parquet"):
        detect_format(text, fmt="json")
    with pytest.raises(InvalidInput, match=r"legacy Excel \.xls"):
        detect_format(write(tmp_path / "old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest"))
    with pytest.raises(InvalidInput, match=r"zip archive, not an \.xlsx"):
        detect_format(write(tmp_path / "a.zip", b"PK\x03\x04not really a zip"))
    # An unknown content type defers to the extension.
    assert detect_format(parquet, content_type="application/octet-stream") == "parquet"


def test_size_and_width_limits(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TooLarge, match="12 bytes; the limit is 5"):
        profile_file(path, options=ProfileOptions(max_bytes=5))
    with pytest.raises(TooLarge, match="3 columns; the limit is 2"):
        profile_file(path, options=ProfileOptions(max_columns=2))


def test_a_table_of_ten_thousand_columns_is_refused_by_default(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(10_000))
    path = write(tmp_path / "wide.csv", header + "\n" + ",".join("1" * 10_000) + "\n")
    with pytest.raises(TooLarge, match="10000 columns; the limit is 1000"):
        profile_file(path, options=OPTIONS)


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        ProfileOptions(quantiles=(0.5, 1.5))
    with pytest.raises(ValidationError):
        ProfileOptions(delimiter='"')
    with pytest.raises(ValidationError):
        ProfileOptions(delimiter=",,")
    with pytest.raises(ValidationError):
        ProfileOptions(top_k=-1)
    with pytest.raises(ValidationError):
        ProfileOptions(surprise=1)  # type: ignore[call-arg]
    assert ProfileOptions(quantiles=(0.5, 0.1, 0.5)).quantiles == (0.1, 0.5)


def test_progress_goes_forward_to_one(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n" + "".join(f"{i},x{i}\n" for i in range(100)))
    seen: list[float] = []
    profile_file(path, options=OPTIONS, progress=seen.append)
    assert seen[-1] == 1.0
    assert seen == sorted(seen) and len(set(seen)) == len(seen) > 5
    assert all(0 <= f <= 1 for f in seen)


def test_the_scratch_copy_is_removed(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a\n1\n")
    profile_file(path, options=OPTIONS)
    with pytest.raises(InvalidInput):
        profile_file(write(tmp_path / "bad.csv", "a\n"), options=OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "t.csv"]


# --- spool --------------------------------------------------------------------------------------


def sizes_in(folder: Path) -> list[int]:
    return [p.stat().st_size for p in folder.iterdir()]


async def chunks_of(
    data: bytes, size: int, *, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    for n, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and n == fail_after:
            raise ConnectionError("storage went away")
        yield data[start : start + size]
        await asyncio.sleep(0)


async def test_spool_streams_to_a_file(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    written_before_the_end: list[int] = []

    async def watched() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data, 64 * 1024):
            yield chunk
        # Before the stream ends, most of it is on disk already: nothing waits for the end.
        written_before_the_end.extend(sizes_in(tmp_path))

    path = await spool(watched(), tmp_path, max_bytes=len(data), suffix=".csv")
    assert path.parent == tmp_path and path.suffix == ".csv"
    assert path.read_bytes() == data
    assert written_before_the_end and written_before_the_end[0] >= 3 * 1024 * 1024


async def test_spool_removes_the_file_when_the_stream_fails(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError):
        await spool(chunks_of(b"x" * 10_000, 1000, fail_after=3), tmp_path, max_bytes=10**6)
    assert sizes_in(tmp_path) == []


async def test_spool_refuses_more_than_the_limit_and_removes_the_file(tmp_path: Path) -> None:
    with pytest.raises(TooLarge, match="larger than the limit of 2500 bytes"):
        await spool(chunks_of(b"x" * 10_000, 1000), tmp_path, max_bytes=2500)
    assert sizes_in(tmp_path) == []
    exact = await spool(chunks_of(b"x" * 2500, 1000), tmp_path, max_bytes=2500)
    assert exact.stat().st_size == 2500


async def test_spool_removes_the_file_when_cancelled(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"y" * 1000
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(spool(endless(), tmp_path, max_bytes=10**9))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sizes_in(tmp_path) == []
