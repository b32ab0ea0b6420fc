"""common.task_ids: the one definition of the task id every service checks and reads."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from common import task_ids
from common.errors import InvalidInput, NotFound

GOOD = ["task_20251230182721_01e09305", "task_20240229000000_ff000000"]
MALFORMED = [
    "",
    "task_1",
    "task_20251230182721_01E09305",  # upper-case hex
    "task_2025123018272_01e09305",  # 13 digits
    "task_20251230182721_01e0930",  # 7 hex
    "../task_20251230182721_01e09305",
    "task_20251230182721_01e09305.json",
    "task_20251230182721_01e09305\n",
    "task_\u0662\u0660\u0662\u0665\u0661\u0662\u0663\u0660\u0661\u0668\u0662\u0667\u0662\u0661_01e09305",
]
BAD_TIME = ["task_20251399182721_01e09305", "task_20250230182721_01e09305"]


def test_new_writes_the_utc_second_then_the_tag_then_the_suffix() -> None:
    paris = timezone(timedelta(hours=1))
    now = datetime(2025, 12, 30, 19, 27, 21, 828_027, tzinfo=paris)
    assert task_ids.new(now, "01", "e09305") == "task_20251230182721_01e09305"


def test_new_draws_the_suffix_when_none_is_given() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    made = {task_ids.new(now, "7f") for _ in range(50)}
    assert len(made) > 1
    assert all(t.startswith("task_20260102030405_7f") and task_ids.REGEX.match(t) for t in made)


@pytest.mark.parametrize(
    ("tag", "suffix"), [("7", "000000"), ("7F", "000000"), ("7f", "00000"), ("7f", "ABCDEF")]
)
def test_new_refuses_a_malformed_tag_or_suffix(tag: str, suffix: str) -> None:
    with pytest.raises(ValueError, match="lowercase hex"):
        task_ids.new(datetime.now(UTC), tag, suffix)


def test_new_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        task_ids.new(datetime(2025, 1, 1), "00", "000000")


def test_parse_gives_the_creation_time_day_and_tag() -> None:
    parsed = task_ids.parse("task_20251230235959_a1b2c3d4")
    assert parsed == task_ids.TaskId(
        "task_20251230235959_a1b2c3d4", datetime(2025, 12, 30, 23, 59, 59, tzinfo=UTC), "a1"
    )
    assert parsed.day == date(2025, 12, 30)


def test_parse_reads_back_what_new_writes() -> None:
    now = datetime(2027, 6, 1, 12, 0, 7, 999_999, tzinfo=UTC)
    parsed = task_ids.parse(task_ids.new(now, "3c"))
    assert (parsed.created_at, parsed.tag) == (now.replace(microsecond=0), "3c")


@pytest.mark.parametrize("task_id", GOOD)
def test_check_returns_a_good_id(task_id: str) -> None:
    assert task_ids.check(task_id) == task_id
    assert task_ids.REGEX.match(task_id)


@pytest.mark.parametrize("task_id", MALFORMED)
def test_check_refuses_what_is_not_the_form(task_id: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        task_ids.check(task_id)
    assert not task_ids.REGEX.match(task_id)


@pytest.mark.parametrize("task_id", BAD_TIME)
def test_an_id_with_no_such_second_names_no_task(task_id: str) -> None:
    with pytest.raises(NotFound, match=f"task {task_id} not found"):
        task_ids.check(task_id)


def test_the_pattern_string_accepts_exactly_what_the_regex_does() -> None:
    """PATTERN is what FastAPI validates paths with (pydantic-core's regex engine)."""
    path = TypeAdapter(Annotated[str, Field(pattern=task_ids.PATTERN)])
    for task_id in [*GOOD, *BAD_TIME, task_ids.EXAMPLE]:
        assert path.validate_python(task_id) == task_id
    for task_id in MALFORMED:
        with pytest.raises(ValidationError):
            path.validate_python(task_id)
    assert re.fullmatch(task_ids.PATTERN, task_ids.EXAMPLE)


def test_day_prefix_starts_every_id_of_that_day_and_no_other() -> None:
    prefix = task_ids.day_prefix(date(2025, 12, 30))
    assert "task_20251230000000_00000000".startswith(prefix)
    assert "task_20251230235959_ffffffff".startswith(prefix)
    assert not "task_20251231000000_00000000".startswith(prefix)


def test_second_prefix_orders_ids_of_that_second_after_earlier_ones() -> None:
    second = datetime(2026, 11, 28, 1, 2, 3, 999_000, tzinfo=UTC)
    prefix = task_ids.second_prefix(second)
    assert prefix == "task_20261128010203"
    assert task_ids.new(second, "7f", "0a0a0a") >= prefix
    assert task_ids.new(second.replace(second=2), "ff", "ffffff") < prefix
