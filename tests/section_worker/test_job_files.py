"""Files in section jobs, against the simulator and a real storage_svc on loopback: the record's
text files put into the prompt, files that cannot be sent refused before any platform call, and
an answer stored as a result file. The last tests go through the worker's gRPC face."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from common.principals import Principal
from section_worker.files import FileClient, FileRef
from section_worker.job_files import is_text
from section_worker.jobs import Event, JobRunner, SectionJob, SectionResult
from simulator.answers import input_digest
from simulator.state import answer_for
from storage_svc.files import FileStore
from tests.section_worker.conftest import (
    ASSET,
    CREDENTIALS,
    MakeClient,
    Sim,
    StartWorker,
)
from wealthai.worker.v1 import worker_pb2

OWNER = "acme/alice"
MOVERS = "AAPL +3.2%\nMSFT -1.1%\n"
FILE = FileRef(f"f_{'0' * 32}_{'1' * 24}", "k", "n.txt", "text/plain", 1)


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def upload(files: FileClient, data: bytes, name: str, content_type: str) -> FileRef:
    return await files.write(OWNER, name, content_type, chunks_of(data))


def job(token: str, record: dict[str, Any], files: tuple[FileRef, ...] = (), **more: Any) -> Any:
    return SectionJob(
        job_id="task_7:top_movers",
        task_id="task_7",
        section="top_movers",
        asset_id=ASSET,
        record_json=json.dumps(record),
        tenant=CREDENTIALS.tenant,
        username=CREDENTIALS.username,
        access_token=token,
        owner_id=OWNER,
        files=files,
        **more,
    )


def runner(make_client: MakeClient, files: FileClient | None, **overrides: Any) -> JobRunner:
    client = make_client(**overrides)
    return JobRunner(client, client._settings, files=files)


async def result_of(run: JobRunner, section_job: SectionJob) -> SectionResult:
    async with contextlib.aclosing(run.run(section_job)) as events:
        seen: list[Event] = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, SectionResult)
    return result


def inlined(ref: FileRef, text: str) -> dict[str, str]:
    return {
        "file_id": ref.file_id,
        "name": ref.name,
        "content_type": ref.content_type,
        "content": text,
    }


async def prompts(sim: Sim) -> dict[str, list[str]]:
    return dict((await sim.http.get("/_sim/prompts")).json())


async def platform_calls(sim: Sim) -> int:
    stats = await sim.stats()
    return sim.total_calls(stats) - int(stats["calls"].get("auth", 0))


# -- into the prompt ------------------------------------------------------------------------


async def test_text_files_go_into_the_prompt_in_place_of_their_references(
    sim: Sim, make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    movers = await upload(file_client, MOVERS.encode(), "movers.txt", "text/plain")
    table = await upload(file_client, b"a,b\n1,2\n", "t.csv", "text/csv; charset=utf-8")
    record = {
        "top_movers_data": {"file_id": movers.file_id},
        "more": [{"file_id": table.file_id}, {"deep": {"file_id": movers.file_id}}],
        "plain": {"file_id": "not a reference", "other": 1},
    }

    result = await result_of(runner(make_client, file_client), job(token, record, (movers, table)))

    expected = {
        "top_movers_data": inlined(movers, MOVERS),
        "more": [inlined(table, "a,b\n1,2\n"), {"deep": inlined(movers, MOVERS)}],
        "plain": {"file_id": "not a reference", "other": 1},
    }
    prompt = json.dumps(expected)
    assert result.success, result.error
    assert (result.response, result.cost) == answer_for(ASSET, prompt, 0.004, 0.24)
    assert list(await prompts(sim)) == [input_digest(ASSET, prompt)]
    assert result.files == ()


async def test_a_record_without_references_is_sent_as_it_is(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    record = {"top_movers_data": "AAPL", "note": {"file_id": "x", "and": "more"}}
    text = 'not JSON, but it says "file_id"'
    run = runner(make_client, None)

    result = await result_of(run, job(token, record))
    assert result.success, result.error
    # Another job: a job id run here again resumes its earlier message (section_worker.orphans).
    as_text = await result_of(
        run, dataclasses.replace(job(token, {}), job_id="task_8:top_movers", record_json=text)
    )
    assert as_text.success, as_text.error

    assert set(await prompts(sim)) == {
        input_digest(ASSET, json.dumps(record)),
        input_digest(ASSET, text),
    }
    with_files = dataclasses.replace(
        job(token, {}, (FILE,)), job_id="task_9:top_movers", record_json=text
    )
    refused = await result_of(run, with_files)
    assert refused.error == "the record is not a JSON object, so it refers to no file"


@pytest.mark.parametrize(
    ("data", "name", "content_type", "why"),
    [
        (b"%PDF-1.7", "r.pdf", "application/pdf", "is application/pdf"),
        (b"x" * 2000, "big.txt", "text/plain", "has 2000 bytes"),
        (b"abc", "odd.txt", "text/plain; charset=no-such-charset", "names an unknown charset"),
    ],
)
async def test_a_file_that_cannot_go_into_a_prompt_fails_the_job_before_any_platform_call(
    sim: Sim,
    make_client: MakeClient,
    file_client: FileClient,
    token: str,
    data: bytes,
    name: str,
    content_type: str,
    why: str,
) -> None:
    fine = await upload(file_client, b"fine", "fine.txt", "text/plain")
    refused = await upload(file_client, data, name, content_type)
    record = {"top_movers_data": {"file_id": fine.file_id}, "x": [{"file_id": refused.file_id}]}
    run = runner(make_client, file_client, prompt_file_max_bytes=1000)

    result = await result_of(run, job(token, record, (fine, refused)))

    assert not result.success
    assert result.error == (
        f"file {name!r} ({refused.file_id}) {why}: only text files up to 1000 bytes can be "
        "sent in a prompt"
    )
    assert await platform_calls(sim) == 0
    assert (result.conv_id, result.message_id) == ("", "")


async def test_the_files_of_one_prompt_are_bounded_in_all(
    sim: Sim, make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    one = await upload(file_client, b"a" * 600, "one.txt", "text/plain")
    two = await upload(file_client, b"b" * 600, "two.txt", "text/plain")
    record = {"top_movers_data": {"file_id": one.file_id}, "y": {"file_id": two.file_id}}
    run = runner(
        make_client, file_client, prompt_file_max_bytes=1000, prompt_files_max_total_bytes=1000
    )

    result = await result_of(run, job(token, record, (one, two)))

    assert result.error == (
        "the record's files hold 1200 bytes; at most 1000 bytes of files can be sent in one prompt"
    )
    assert await platform_calls(sim) == 0


async def test_text_that_is_not_what_its_type_says_fails_the_job(
    sim: Sim, make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    latin = await upload(file_client, "café".encode("latin-1"), "l.txt", "text/plain")
    record = {"top_movers_data": {"file_id": latin.file_id}}

    result = await result_of(runner(make_client, file_client), job(token, record, (latin,)))

    assert result.error == (
        f"file 'l.txt' ({latin.file_id}) is not utf-8 text; only text files can be sent in a prompt"
    )
    assert await platform_calls(sim) == 0
    declared = dataclasses.replace(latin, content_type="text/plain; charset=latin-1")
    result = await result_of(runner(make_client, file_client), job(token, record, (declared,)))
    assert result.success, result.error  # the type names its charset: read as such


async def test_a_file_deleted_since_submission_another_owners_or_not_given_fails_the_job(
    sim: Sim,
    make_client: MakeClient,
    file_client: FileClient,
    file_store: FileStore,
    token: str,
) -> None:
    gone = await upload(file_client, b"soon gone", "gone.txt", "text/plain")
    await file_store.delete(Principal(OWNER, "acme"), gone.file_id)
    bobs = await file_client.write("acme/bob", "b.txt", "text/plain", chunks_of(b"bob's"))
    run = runner(make_client, file_client)

    for ref in (gone, bobs):
        record = {"top_movers_data": {"file_id": ref.file_id}}
        result = await result_of(run, job(token, record, (ref,)))
        assert result.error == (
            f"file {ref.name!r} ({ref.file_id}) cannot be read: file {ref.file_id} not found"
        )
    result = await result_of(run, job(token, {"top_movers_data": {"file_id": gone.file_id}}))
    assert result.error == f"record.top_movers_data: file {gone.file_id} was not given to the job"
    assert await platform_calls(sim) == 0


def test_what_counts_as_text() -> None:
    for text in (
        "text/plain",
        "text/markdown; charset=utf-8",
        "application/json",
        "application/vnd.api+json",
        "application/csv",
        "image/svg+xml",
        "APPLICATION/XML",
    ):
        assert is_text(text), text
    for binary in (
        "application/pdf",
        "application/octet-stream",
        "image/png",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ):
        assert not is_text(binary), binary


# -- out as a file --------------------------------------------------------------------------


async def test_an_answer_for_a_file_output_is_stored_as_the_owners_file(
    sim: Sim, make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    record = {"top_movers_data": "AAPL +3.2%"}

    result = await result_of(runner(make_client, file_client), job(token, record, output="file"))

    answer, cost = answer_for(ASSET, json.dumps(record), 0.004, 0.24)
    assert result.success, result.error
    assert (result.response, result.cost) == ("", cost)
    [stored] = result.files
    assert (stored.name, stored.content_type) == (
        "task_7_top_movers.md",
        "text/markdown; charset=utf-8",
    )
    assert stored.size == len(answer.encode())
    content = b"".join([chunk async for chunk in file_client.open(stored, OWNER)])
    assert content.decode() == answer


async def test_an_answer_that_cannot_be_stored_fails_the_job_keeping_its_ids(
    sim: Sim, make_client: MakeClient, token: str
) -> None:
    result = await result_of(
        runner(make_client, None), job(token, {"top_movers_data": "x"}, output="file")
    )

    assert not result.success
    assert result.error == "this worker is not connected to file storage"
    assert result.conv_id and result.message_id  # a resumed dispatch polls, never pays twice


# -- through gRPC ---------------------------------------------------------------------------


def job_message(token: str, record: dict[str, Any], **fields: Any) -> Any:
    values: dict[str, Any] = {
        "job_id": "task_7:top_movers",
        "task_id": "task_7",
        "section": "top_movers",
        "asset_id": ASSET,
        "record_json": json.dumps(record),
        "tenant": "acme",
        "username": "alice@example.com",
        "access_token": token,
        "owner_id": OWNER,
    }
    values.update(fields)
    return worker_pb2.SectionJob(**values)


async def test_a_job_over_grpc_reads_its_files_and_returns_its_result_file(
    sim: Sim, start_worker: StartWorker, file_client: FileClient, token: str
) -> None:
    worker = await start_worker(files=file_client)
    ref = await upload(file_client, MOVERS.encode(), "m.txt", "text/plain")
    record = {"top_movers_data": {"file_id": ref.file_id}}
    request = job_message(token, record, files=[ref.message()], output="file")

    events = [event async for event in worker.stub.RunSection(request)]

    result = events[-1].result
    assert result.success, result.error
    prompt = json.dumps({"top_movers_data": inlined(ref, MOVERS)})
    answer, _ = answer_for(ASSET, prompt, 0.004, 0.24)
    [stored] = result.files
    assert stored.name == "task_7_top_movers.md" and stored.size == len(answer.encode())
    content = b"".join([c async for c in file_client.open(FileRef.of_message(stored), OWNER)])
    assert content.decode() == answer


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        ({"output": "elsewhere"}, 'output must be "" or "file"'),
        ({"output": "file", "owner_id": ""}, "owner_id is required for a job with files"),
        (
            {"files": [worker_pb2.FileRef(file_id="f_1")], "owner_id": ""},
            "owner_id is required for a job with files",
        ),
        (
            {"files": [worker_pb2.FileRef(file_id="f_1")]},
            "file_id 'f_1' is not of the form f_<32 hex>_<24 hex>",
        ),
    ],
)
async def test_a_job_with_bad_file_fields_is_invalid(
    start_worker: StartWorker, fields: dict[str, Any], details: str
) -> None:
    worker = await start_worker()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [e async for e in worker.stub.RunSection(job_message("t", {"a": 1}, **fields))]

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == details
