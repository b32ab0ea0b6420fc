"""The profile_table and transform_table kinds through the job runner, against the simulator
and a real storage_svc on loopback: the figures and rows they produce, the chunks they reuse,
the row ranges they report, and every input they refuse with the problem named."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fastexcel
import grpc
import pytest
import xlsxwriter  # type: ignore[import-untyped]

from section_worker.files import FileClient, FileRef
from section_worker.jobs import Event, JobRunner, Progress, SectionJob, SectionResult
from section_worker.kinds import transform_table
from section_worker.kinds.base import KindContext, Scratch
from section_worker.kinds.checkpoints import Checkpoints
from section_worker.kinds.transform_table import Answered
from section_worker.protection.chain import Answer
from simulator.answers import COMPUTED, computed
from tests.helpers import assert_eventually
from tests.section_worker.conftest import (
    ASSET,
    CREDENTIALS,
    FAILING_ASSET,
    MakeClient,
    Sim,
    StartWorker,
)
from wealthai.worker.v1 import worker_pb2

OWNER = "acme/alice"
ROWS = [{"name": f"client {i}", "a": str(i), "b": str(i * 3)} for i in range(1, 24)]


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


def table(rows: list[dict[str, str]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


async def upload(files: FileClient, data: bytes, name: str, content_type: str) -> FileRef:
    return await files.write(OWNER, name, content_type, chunks_of(data))


def job(kind: str, record: dict[str, Any], ref: FileRef, token: str = "", **more: Any) -> Any:
    platform = {"asset_id": ASSET if token else "", "access_token": token}
    return SectionJob(
        job_id=f"task_9:{kind}",
        task_id="task_9",
        section=kind,
        record_json=json.dumps(record),
        tenant=CREDENTIALS.tenant,
        username=CREDENTIALS.username,
        owner_id=OWNER,
        files=(ref,),
        kind=kind,
        **(platform | more),
    )


@pytest.fixture(autouse=True)
async def cheap_rows(sim: Sim) -> None:
    """A chunk costs its rows' price: kept well under the tenant's task ceiling ($2)."""
    await sim.configure(cost_min=0.001, cost_max=0.002)


async def test_budgets_apply_to_each_chunk(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    await sim.configure(cost_min=0.2, cost_max=0.2)  # $1 a chunk of 5: the third overshoots
    ref = await upload(file_client, table(ROWS[:15]), "dear.csv", "text/csv")
    options = {"chunk_rows": 5, "parallel_chunks": 1}
    result = last(
        await events_of(runner(make_client, file_client), transform(ref, token, options=options))
    )
    assert result.success, result.error
    failed = json.loads(result.result_json)["failed_chunks"]
    assert [(f["first_row"], f["last_row"]) for f in failed] == [(11, 15)]
    assert "ceiling" in failed[0]["reason"] and "rows 1-5" not in failed[0]["reason"]
    assert await prompts(sim) == 2


def runner(make_client: MakeClient, files: FileClient) -> JobRunner:
    client = make_client(job_timeout_s=30.0)
    return JobRunner(client, client._settings, files=files)


async def events_of(run: JobRunner, section_job: SectionJob) -> list[Event]:
    async with contextlib.aclosing(run.run(section_job)) as events:
        return [event async for event in events]


def last(events: list[Event]) -> SectionResult:
    result = events[-1]
    assert isinstance(result, SectionResult)
    return result


async def read(files: FileClient, ref: FileRef) -> bytes:
    return b"".join([chunk async for chunk in files.open(ref, OWNER)])


async def prompts(sim: Sim) -> int:
    return int((await sim.stats())["calls"]["prompt"])


async def checkpoint_names(files: FileClient) -> list[str]:
    page, _ = await files.list_page(OWNER)
    return [ref.name for ref in page if ".chunk-" in ref.name]


def transform(ref: FileRef, token: str, **more: Any) -> Any:
    record = {"instruction": "add a computed column", "table_file": {"file_id": ref.file_id}}
    options = more.pop("options", {"chunk_rows": 5, "parallel_chunks": 2})
    return job("transform_table", record, ref, token, options_json=json.dumps(options), **more)


# -- transform_table ----------------------------------------------------------------------------


async def test_a_table_is_transformed_in_chunks_into_an_ordered_output_file(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, table(ROWS), "clients.csv", "text/csv")
    events = await events_of(runner(make_client, file_client), transform(ref, token))
    result = last(events)
    assert result.success, result.error
    summary = json.loads(result.result_json)
    assert (summary["rows"], summary["chunks"], summary["failed_chunks"]) == (23, 5, [])
    assert summary["chunks_reused"] == 0 and result.cost > 0
    counts = [(e.done, e.total) for e in events if isinstance(e, Progress) and e.total]
    assert counts[0] == (0, 5) and counts[-1] == (5, 5)
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    assert await prompts(sim) == 5
    (output,) = result.files
    assert summary["output_file"]["file_id"] == output.file_id
    assert output.name == "clients.transformed.csv"
    got = list(csv.DictReader(io.StringIO((await read(file_client, output)).decode())))
    assert [row["name"] for row in got] == [row["name"] for row in ROWS]
    for given, row in zip(ROWS, got, strict=True):
        assert row[COMPUTED] == str(computed(given)) and row["_error"] == ""
    assert await checkpoint_names(file_client) == []  # kept chunks go with success


async def test_chunks_kept_by_an_earlier_dispatch_are_not_asked_again(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, table(ROWS), "clients.csv", "text/csv")
    kept = Checkpoints(file_client, OWNER, "task_9", "transform_table")
    for index in (0, 2):
        first = index * 5 + 1
        rows = [{COMPUTED: "kept"} for _ in range(5)]
        await kept.keep(index, asdict(Answered(index, first, first + 4, rows, "", 0.01)))
    # A checkpoint whose rows are not the chunk's (the chunk size changed) is not used.
    await kept.keep(1, asdict(Answered(1, 1, 3, [{COMPUTED: "stale"}] * 3, "", 0.01)))
    result = last(await events_of(runner(make_client, file_client), transform(ref, token)))
    assert result.success, result.error
    assert json.loads(result.result_json)["chunks_reused"] == 2
    assert await prompts(sim) == 3
    got = list(csv.DictReader(io.StringIO((await read(file_client, result.files[0])).decode())))
    assert [row[COMPUTED] for row in got[:5]] == ["kept"] * 5
    assert [row[COMPUTED] for row in got[10:15]] == ["kept"] * 5
    assert got[5][COMPUTED] == str(computed(ROWS[5]))
    assert await checkpoint_names(file_client) == []


async def test_a_chunk_that_fails_through_the_chain_is_reported_by_its_rows(
    make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    ref = await upload(file_client, table(ROWS[:8]), "small.csv", "text/csv")
    failing = transform(ref, token, asset_id=FAILING_ASSET)
    result = last(await events_of(runner(make_client, file_client), failing))
    assert result.success, result.error
    failed = json.loads(result.result_json)["failed_chunks"]
    assert [(f["first_row"], f["last_row"]) for f in failed] == [(1, 5), (6, 8)]
    assert all("every asset of the chain failed" in f["reason"] for f in failed)
    got = list(csv.DictReader(io.StringIO((await read(file_client, result.files[0])).decode())))
    assert [row["name"] for row in got] == [row["name"] for row in ROWS[:8]]
    assert all(row["_error"] for row in got)


async def test_bad_tables_and_instructions_fail_the_job_naming_the_problem(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    run = runner(make_client, file_client)
    pdf = await upload(file_client, b"%PDF-1.4", "notes.pdf", "application/pdf")
    wide = ",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join(["1"] * 10_000) + "\n"
    wide_ref = await upload(file_client, wide.encode(), "wide.csv", "text/csv")
    empty = await upload(file_client, b"a,b\n", "empty.csv", "text/csv")
    good = await upload(file_client, table(ROWS), "ok.csv", "text/csv")
    cases = [
        (transform(pdf, token), "transform_table reads CSV or XLSX"),
        (transform(wide_ref, token), "10000 columns"),
        (transform(empty, token), "no data rows"),
    ]
    for record, problem in [
        ({"table_file": {"file_id": good.file_id}}, '"instruction" must be text'),
        ({"instruction": " ", "table_file": {"file_id": good.file_id}}, "instruction is empty"),
        ({"instruction": "x" * 5000, "table_file": {"file_id": good.file_id}}, "over the limit"),
        ({"instruction": "x", "table_file": "nope"}, '"table_file" must be'),
    ]:
        cases.append((job("transform_table", record, good, token), problem))
    for section_job, problem in cases:
        result = last(await events_of(run, section_job))
        assert not result.success and problem in result.error, (problem, result.error)
    assert await prompts(sim) == 0  # nothing was paid for


# -- profile_table ------------------------------------------------------------------------------


async def test_a_file_is_profiled_without_any_platform_call(
    make_client: MakeClient, file_client: FileClient, sim: Sim
) -> None:
    data = b"amount,city\n1.5,Paris\n,Oslo\n4.5,Paris,extra\n"
    ref = await upload(file_client, data, "t.csv", "text/csv")
    record = {"table_file": {"file_id": ref.file_id}}
    events = await events_of(runner(make_client, file_client), job("profile_table", record, ref))
    result = last(events)
    assert result.success, result.error
    profile = json.loads(result.result_json)
    assert profile["file_id"] == ref.file_id and profile["file"]["rows"] == 3
    amount = profile["columns"][0]
    assert (amount["count"], amount["nulls"], amount["mean"]) == (2, 1, 3.0)
    assert profile["malformed"]["ragged_rows"] == 1
    percents = [e.done for e in events if isinstance(e, Progress) and e.total == 100]
    assert percents and percents[-1] == 100
    assert sim.total_calls(await sim.stats()) == 0


async def test_a_file_that_cannot_be_profiled_fails_the_job_naming_the_problem(
    make_client: MakeClient, file_client: FileClient
) -> None:
    run = runner(make_client, file_client)
    empty = await upload(file_client, b"", "e.csv", "text/csv")
    wide = ",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join(["1"] * 10_000) + "\n"
    wide_ref = await upload(file_client, wide.encode(), "wide.csv", "text/csv")
    pdf = await upload(file_client, b"%PDF-1.4 hello", "x.csv", "text/csv")
    cases = [
        (job("profile_table", {"table_file": {"file_id": empty.file_id}}, empty), "empty"),
        (job("profile_table", {"table_file": {"file_id": wide_ref.file_id}}, wide_ref), "1000"),
        (job("profile_table", {"table_file": {"file_id": pdf.file_id}}, pdf), "PDF"),
        (job("profile_table", {"other": 1}, empty), '"table_file" must be'),
        (job("profile_table", {"table_file": {"file_id": "f_x"}}, empty), "was not given"),
    ]
    for section_job, problem in cases:
        result = last(await events_of(run, section_job))
        assert not result.success and problem in result.error, (problem, result.error)


# -- over gRPC ----------------------------------------------------------------------------------


async def test_a_profile_job_over_grpc_needs_no_token_and_returns_its_profile(
    start_worker: StartWorker, file_client: FileClient
) -> None:
    worker = await start_worker(files=file_client)
    ref = await upload(file_client, b"a,b\n1,x\n2,y\n", "t.csv", "text/csv")
    request = worker_pb2.SectionJob(
        job_id="task_9:data_profile",
        task_id="task_9",
        section="data_profile",
        record_json=json.dumps({"table_file": {"file_id": ref.file_id}}),
        owner_id=OWNER,
        files=[ref.message()],
        kind="profile_table",
        options_json=json.dumps({"top_k": 1}),
    )
    events = [event async for event in worker.stub.RunSection(request)]
    result = events[-1].result
    assert result.success, result.error
    profile = json.loads(result.result_json)
    assert profile["file"]["rows"] == 2
    assert len(profile["columns"][1]["top_values"]) == 1  # the options reached the kind
    assert any(e.progress.total == 100 for e in events if e.HasField("progress"))


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        ({"kind": "poetry"}, "kind 'poetry' is not one this worker runs"),
        ({"kind": "transform_table", "access_token": ""}, "access_token is required"),
        ({"kind": "transform_table", "asset_id": ""}, "asset_id is required"),
        ({"kind": "profile_table", "options_json": '{"top_k": -1}'}, "options of kind"),
        ({"kind": "profile_table", "options_json": "[]"}, "must be a JSON object"),
    ],
)
async def test_a_job_of_a_bad_kind_or_options_is_invalid(
    start_worker: StartWorker, fields: dict[str, Any], details: str
) -> None:
    worker = await start_worker()
    values: dict[str, Any] = {
        "job_id": "task_9:x",
        "task_id": "task_9",
        "asset_id": ASSET,
        "record_json": "{}",
        "access_token": "t",
    }
    request = worker_pb2.SectionJob(**(values | fields))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [e async for e in worker.stub.RunSection(request)]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details in (refused.value.details() or "")


async def test_an_xlsx_table_gives_an_xlsx_output(
    make_client: MakeClient, file_client: FileClient, token: str, tmp_path: Path
) -> None:
    book = tmp_path / "in.xlsx"
    workbook = xlsxwriter.Workbook(str(book))
    sheet = workbook.add_worksheet()
    for row, values in enumerate([["name", "a"], ["x", 1], ["y", 2.5], ["z", 4]]):
        for col, value in enumerate(values):
            sheet.write(row, col, value)
    workbook.close()
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ref = await upload(file_client, book.read_bytes(), "book.xlsx", xlsx)
    result = last(await events_of(runner(make_client, file_client), transform(ref, token)))
    assert result.success, result.error
    (output,) = result.files
    assert output.name == "book.transformed.xlsx" and output.content_type == xlsx
    out = tmp_path / "out.xlsx"
    out.write_bytes(await read(file_client, output))
    frame = fastexcel.read_excel(str(out)).load_sheet(0).to_polars()
    assert frame["name"].to_list() == ["x", "y", "z"]
    assert frame[COMPUTED].to_list() == [1, 2.5, 4]


async def test_a_kept_chunk_that_cannot_be_read_is_asked_again(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, table(ROWS[:5]), "one.csv", "text/csv")
    name = Checkpoints(file_client, OWNER, "task_9", "transform_table").name(0)
    await file_client.write(OWNER, name, "application/json", chunks_of(b"{not json"))
    result = last(await events_of(runner(make_client, file_client), transform(ref, token)))
    assert result.success, result.error
    assert json.loads(result.result_json)["chunks_reused"] == 0
    assert await prompts(sim) == 1
    assert await checkpoint_names(file_client) == []  # the unreadable one went too


class HeldBack:
    """A platform whose first chunk answers only when let go; every other chunk at once."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.first = asyncio.Event()

    async def ask(self, prompt: str, *, label: str) -> Answer:
        self.asked.append(label)
        if label == "rows 1-1":
            await self.first.wait()
        rows = json.loads(prompt)["rows"]
        return Answer(json.dumps({"rows": [{COMPUTED: "ok"} for _ in rows]}), 0.001)

    async def converse(self, prompt: Callable[[], Awaitable[str]]) -> Answer:
        raise AssertionError("a transform asks; it does not converse")


async def test_answers_waiting_behind_a_slow_chunk_are_bounded(
    make_client: MakeClient, file_client: FileClient, tmp_path: Path
) -> None:
    rows = [{"n": str(i)} for i in range(40)]
    ref = await upload(file_client, table(rows), "slow.csv", "text/csv")
    platform = HeldBack()
    options = transform_table.Options(chunk_rows=1, parallel_chunks=2)
    section_job = transform(ref, "token")
    ctx = KindContext(
        job=section_job,
        options=options,
        platform=platform,
        files=file_client,
        settings=make_client()._settings,
        progress=lambda done, total, note: None,
        step=lambda doing: None,
        folder=Scratch(tmp_path),
    )
    running = asyncio.create_task(transform_table.run(ctx))
    # Row 1's chunk is held back; 8 answers (4 per slot) may wait behind it, and no more.
    await assert_eventually(lambda: _count(platform), lambda n: n >= 9, timeout=10)
    await asyncio.sleep(0.3)  # time to ask more, were the bound broken
    assert len(platform.asked) == 9
    platform.first.set()
    outcome = await asyncio.wait_for(running, timeout=30)
    assert outcome.result is not None and outcome.result["rows"] == 40
    assert len(platform.asked) == 40


async def _count(platform: HeldBack) -> int:
    return len(platform.asked)


def test_a_scratch_folder_is_made_only_when_used_and_removed_after(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing made yet
    scratch.remove()  # nothing to remove
    (scratch.path / "spool").write_bytes(b"x")
    assert scratch.path.parent == tmp_path and scratch.path.is_dir()
    scratch.remove()
    assert list(tmp_path.iterdir()) == []


async def test_a_jobs_scratch_folder_is_gone_when_it_ends(
    make_client: MakeClient, file_client: FileClient, token: str, tmp_path: Path
) -> None:
    ref = await upload(file_client, table(ROWS[:6]), "clients.csv", "text/csv")
    client = make_client(job_timeout_s=30.0, scratch_dir=str(tmp_path))
    result = last(
        await events_of(
            JobRunner(client, client._settings, files=file_client), transform(ref, token)
        )
    )
    assert result.success, result.error
    assert os.listdir(tmp_path) == []
