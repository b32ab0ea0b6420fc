"""Files in tasks, decided in plain Python over in-memory files: finding references, checking
them for the submitting principal, the files of each job, and what a task's end deletes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from common import file_refs
from common.errors import InvalidInput, TooLarge, Unavailable
from orchestrator import task_files
from orchestrator.config import SectionsConfig, load_config
from orchestrator.file_client import FileClient
from orchestrator.models import FileRef, SectionResult, SectionState, TaskState
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeFiles

ALICE = "t/alice"
BOB = "t/bob"
CONFIG = Path(__file__).resolve().parents[2] / "config.json"


def as_client(files: FakeFiles) -> FileClient:
    return cast(FileClient, files)


def config(output_of: dict[str, str] | None = None) -> SectionsConfig:
    base = load_config(CONFIG)
    sections = {
        name: section.model_copy(update={"output": (output_of or {}).get(name, "inline")})
        for name, section in base.sections.items()
    }
    return SectionsConfig(sections=sections)


def ref(file_id: str) -> dict[str, str]:
    return {"file_id": file_id}


# -- finding references ---------------------------------------------------------------------


def test_references_are_found_nested_and_in_arrays_in_order() -> None:
    files = FakeFiles()
    a, b, c = (files.add(ALICE) for _ in range(3))
    records: list[dict[str, Any]] = [
        {"top_movers_data": ref(a.file_id), "plain": {"file_id": a.file_id, "also": 1}},
        {"assets": [1, {"doc": ref(b.file_id)}, [ref(c.file_id)]], "again": ref(a.file_id)},
    ]

    found = task_files.references(records)

    assert [(r.where, r.file_id) for r in found] == [
        ("data[0].top_movers_data", a.file_id),
        ("data[1].assets[1].doc", b.file_id),
        ("data[1].assets[2][0]", c.file_id),
        ("data[1].again", a.file_id),
    ]


@pytest.mark.parametrize("given", ["f_123", 42, None, {"file_id": "x"}])
def test_a_reference_whose_id_is_not_a_file_id_is_invalid_naming_where(given: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        task_files.references([{"a": 1}, {"x": [{"file_id": given}]}])
    assert caught.value.message == "data[1].x[0]: file_id must be a file id, f_<32 hex>_<24 hex>"


def test_a_task_references_a_bounded_number_of_distinct_files() -> None:
    files = FakeFiles()
    refs = [ref(files.add(ALICE).file_id) for _ in range(task_files.MAX_FILES_PER_TASK)]
    assert len(task_files.references([{"r": refs, "same": refs[0]}])) == len(refs) + 1

    refs.append(ref(files.add(ALICE).file_id))
    with pytest.raises(TooLarge, match="at most 64 files per task"):
        task_files.references([{"r": refs}])


# -- checking them at submission ------------------------------------------------------------


async def test_every_referenced_file_of_the_owner_is_looked_up_once() -> None:
    files = FakeFiles()
    a, b = files.add(ALICE, "a.txt"), files.add(ALICE, "b.csv", "text/csv", temporary=True)
    records = [{"x": ref(a.file_id), "y": [ref(b.file_id), ref(a.file_id)]}]

    resolved = await task_files.resolve(as_client(files), ALICE, records)

    assert resolved == [a, b]
    assert sorted(files.calls) == sorted([("meta", a.file_id), ("meta", b.file_id)])


async def test_missing_expired_and_other_owners_files_are_invalid_alike() -> None:
    files = FakeFiles()
    mine = files.add(ALICE)
    bobs = files.add(BOB)
    expired = files.add(ALICE)
    del files.files[expired.file_id]  # storage answers an expired file as not found
    never = f"f_{'0' * 32}_{'1' * 24}"
    records = [{"a": ref(mine.file_id), "b": ref(bobs.file_id)}, {"c": [ref(expired.file_id)]}]
    records.append({"d": ref(never)})

    with pytest.raises(InvalidInput) as caught:
        await task_files.resolve(as_client(files), ALICE, records)

    assert caught.value.message == (
        f"data[0].b: file {bobs.file_id} not found; "
        f"data[1].c[0]: file {expired.file_id} not found; "
        f"data[2].d: file {never} not found"
    )


async def test_an_admin_references_only_its_own_files() -> None:
    files = FakeFiles()
    clients = files.add(ALICE)

    with pytest.raises(InvalidInput, match="not found"):
        await task_files.resolve(as_client(files), "ops", [{"x": ref(clients.file_id)}])


async def test_records_without_references_cost_no_lookup_and_storage_down_is_unavailable() -> None:
    files = FakeFiles()
    assert await task_files.resolve(as_client(files), ALICE, [{"x": 1}]) == []
    assert files.calls == []

    mine = files.add(ALICE)
    files.fail("meta", Unavailable("storage unavailable: down"))
    with pytest.raises(Unavailable):
        await task_files.resolve(as_client(files), ALICE, [{"x": ref(mine.file_id)}])


# -- jobs -----------------------------------------------------------------------------------


def test_a_job_carries_the_files_of_its_own_record() -> None:
    files = FakeFiles()
    a, b = files.add(ALICE), files.add(ALICE)
    record = task_record(
        data=[{"x": ref(a.file_id)}, {"y": {"z": ref(b.file_id)}, "w": ref(a.file_id)}, {}],
        files=[a, b],
    )

    assert task_files.of_record(record, 0) == (a,)
    assert task_files.of_record(record, 1) == (a, b)
    assert task_files.of_record(record, 2) == ()


def test_a_section_configured_for_a_file_output_says_so_in_its_job() -> None:
    sections = config({"top_movers": "file"}).sections
    assert task_files.output_of(sections["top_movers"]) == "file"
    assert task_files.output_of(sections["portfolio_snapshot"]) == ""
    assert task_files.output_of(None) == ""


def test_the_output_setting_is_checked_at_start_up(tmp_path: Path) -> None:
    raw = CONFIG.read_text().replace('"max_dispatches": 4', '"max_dispatches": 4, "output": "x"', 1)
    (tmp_path / "config.json").write_text(raw)
    with pytest.raises(Exception, match="output"):
        load_config(tmp_path / "config.json")


# -- at the end of a task -------------------------------------------------------------------


def ended(status: TaskState, files: list[FileRef], **fields: Any) -> Any:
    return task_record(status=status, principal_id=ALICE, files=files, **fields)


@pytest.mark.parametrize("status", [TaskState.COMPLETED, TaskState.CANCELLED])
async def test_a_task_ending_completed_or_cancelled_deletes_its_temporary_inputs(
    status: TaskState,
) -> None:
    files = FakeFiles()
    temporary, kept = files.add(ALICE, temporary=True), files.add(ALICE)

    await task_files.after_task(
        as_client(files), ended(status, [temporary, kept]), config(), delete_temporary=True
    )

    assert list(files.files) == [kept.file_id]


async def test_a_task_ending_in_error_keeps_its_temporary_inputs_for_a_retry() -> None:
    files = FakeFiles()
    temporary = files.add(ALICE, temporary=True)

    await task_files.after_task(
        as_client(files), ended(TaskState.ERROR, [temporary]), config(), delete_temporary=True
    )

    assert list(files.files) == [temporary.file_id]
    assert files.calls == []


async def test_temporary_inputs_are_kept_when_the_setting_says_so() -> None:
    files = FakeFiles()
    temporary = files.add(ALICE, temporary=True)

    await task_files.after_task(
        as_client(files), ended(TaskState.COMPLETED, [temporary]), config(), delete_temporary=False
    )

    assert list(files.files) == [temporary.file_id]


async def test_a_failed_deletion_is_logged_and_the_others_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = FakeFiles()
    first, second = files.add(ALICE, temporary=True), files.add(ALICE, temporary=True)
    gone = files.add(ALICE, temporary=True)
    del files.files[gone.file_id]
    files.fail("delete", Unavailable("storage unavailable: down"))
    record = ended(TaskState.COMPLETED, [first, second, gone])

    with caplog.at_level(logging.INFO, logger="orchestrator.task_files"):
        await task_files.after_task(as_client(files), record, config(), delete_temporary=True)

    assert list(files.files) == [first.file_id]
    assert f"temporary input {first.file_id} not deleted (storage unavailable: down)" in (
        caplog.text
    )
    assert f"temporary input {gone.file_id} was gone already" in caplog.text


def file_section(dispatches: int, produced: list[FileRef]) -> SectionResult:
    return SectionResult(
        status=SectionState.COMPLETED,
        record_index=1,
        asset_id="a",
        dispatches=dispatches,
        files=produced,
    )


async def test_result_files_of_lost_dispatches_are_deleted_keeping_the_results_one() -> None:
    files = FakeFiles()
    record = ended(TaskState.COMPLETED, [])
    name = file_refs.result_name(record.task_id, "top_movers")
    lost = [files.add(ALICE, name, "text/markdown") for _ in range(2)]
    kept = files.add(ALICE, name, "text/markdown")
    others = [files.add(ALICE, "other.md"), files.add(BOB, name), files.add(ALICE)]
    record.result_data["top_movers"] = file_section(3, [kept])

    await task_files.after_task(
        as_client(files), record, config({"top_movers": "file"}), delete_temporary=True
    )

    assert set(files.files) == {kept.file_id, *(o.file_id for o in others)}
    assert all(f.file_id not in files.files for f in lost)
    assert [c for c in files.calls if c[0] == "list_page"] == [("list_page", ALICE)] * 3


async def test_after_a_takeover_lost_result_files_are_looked_for_too() -> None:
    files = FakeFiles()
    record = ended(TaskState.ERROR, [], takeovers=1)
    lost = files.add(ALICE, file_refs.result_name(record.task_id, "top_movers"))
    record.result_data["top_movers"] = file_section(1, [])

    await task_files.after_task(
        as_client(files), record, config({"top_movers": "file"}), delete_temporary=True
    )

    assert lost.file_id not in files.files


@pytest.mark.parametrize(
    ("dispatches", "output"),
    [(1, "file"), (3, "inline")],
)
async def test_no_listing_when_no_job_can_have_left_a_result_file(
    dispatches: int, output: str
) -> None:
    files = FakeFiles()
    record = ended(TaskState.COMPLETED, [])
    files.add(ALICE, file_refs.result_name(record.task_id, "top_movers"))
    record.result_data["top_movers"] = file_section(dispatches, [])

    await task_files.after_task(
        as_client(files), record, config({"top_movers": output}), delete_temporary=True
    )

    assert files.calls == []
    assert len(files.files) == 1


async def test_looking_for_lost_result_files_is_bounded_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files = FakeFiles()
    record = ended(TaskState.COMPLETED, [])
    record.result_data["top_movers"] = file_section(2, [])
    for _ in range(7):
        files.add(ALICE)
    monkeypatch.setattr(task_files, "DUPLICATE_SCAN_PAGES", 2)
    cfg = config({"top_movers": "file"})

    await task_files.after_task(as_client(files), record, cfg, delete_temporary=True)
    files.fail("list_page", Unavailable("storage unavailable: down"))
    await task_files.after_task(as_client(files), record, cfg, delete_temporary=True)

    assert [c[0] for c in files.calls] == ["list_page"] * 3
    assert "looked through 2 pages of its owner's files" in caplog.text
    assert "could not look for lost result files: storage unavailable: down" in caplog.text
