"""Files in tasks end to end, every service a real process: a client's text file, uploaded to
storage_svc, referenced by a task, read by the worker into the prompt the platform receives,
deleted after the task (it was temporary); the section configured for a file output answers
with a result file the client can download; a file the caller does not own is a 422."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest

from common.channels import open_channel
from common.tls import Role
from scripts.devstack import Stack
from simulator.answers import input_digest
from simulator.state import answer_for
from tests.e2e.conftest import FAST, changed_config, loopback_ports, running
from tests.e2e.test_platform import PASSWORD, TOP_MOVERS_ASSET, wait_finished
from tests.helpers import assert_eventually, free_port
from wealthai.storage.v1 import files_pb2, files_pb2_grpc

pytestmark = pytest.mark.e2e

MOVERS = "AAPL +3.2%\nMSFT -1.1%\nNVDA +5.4%\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The platform with a config.json whose top_movers section answers with a file."""
    base = tmp_path_factory.mktemp("files-stack")
    configured = changed_config(base, {"top_movers": {"output": "file"}})
    with running(base, loopback_ports(), FAST | configured, "e2e-files") as platform:
        yield platform


@pytest.fixture
async def files(stack: Stack) -> AsyncIterator[Any]:
    """storage_svc's FileService, called with a certificate of the stack (the gateway's file
    routes are another way in; this test needs only the files)."""
    identity = stack.identity(Role.ORCHESTRATOR)
    async with open_channel(f"127.0.0.1:{stack.ports.storage}", identity, Role.STORAGE) as channel:
        yield files_pb2_grpc.FileServiceStub(channel)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The gateway with a new client key; and that key's principal id."""
    base = f"http://127.0.0.1:{stack.ports.gateway}"
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        made = await http.post(
            "/admin/keys",
            json={"name": f"ann{free_port()}", "tenant": "acme", "role": "client"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        http.headers["Authorization"] = f"Bearer {made.json()['key']}"
        yield http, made.json()["principal_id"]


async def upload(
    files: Any, owner: str, data: bytes, name: str, content_type: str, temporary: bool
) -> Any:
    def messages() -> Iterator[files_pb2.UploadChunk]:
        start = files_pb2.UploadStart(
            owner=owner, name=name, content_type=content_type, temporary=temporary
        )
        yield files_pb2.UploadChunk(start=start)
        yield files_pb2.UploadChunk(data=data)

    return await files.Upload(messages(), timeout=10)


async def submit(http: httpx.AsyncClient, data: list[dict[str, Any]]) -> httpx.Response:
    return await http.post(
        "/task/submit", json={"username": "user@example.com", "password": PASSWORD, "data": data}
    )


async def test_a_task_reads_its_file_into_the_prompt_deletes_it_and_answers_with_a_file(
    stack: Stack, files: Any, client: tuple[httpx.AsyncClient, str]
) -> None:
    http, owner = client
    sim = f"http://127.0.0.1:{stack.ports.simulator}"
    movers = await upload(files, owner, MOVERS.encode(), "movers.txt", "text/plain", True)
    kept = await upload(files, owner, b"kept", "kept.txt", "text/plain", False)
    data = [
        {"Market Value": "12000000", "Top Asset": "Equity (65%)"},
        {"top_movers_data": {"file_id": movers.file_id}},
    ]

    reply = await submit(http, data)
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    status = (await wait_finished(http, [task_id]))[task_id]
    assert status["status"] == "completed", status

    inlined = {
        "file_id": movers.file_id,
        "name": "movers.txt",
        "content_type": "text/plain",
        "content": MOVERS,
    }
    prompt = json.dumps({"top_movers_data": inlined})
    async with httpx.AsyncClient(base_url=sim, timeout=10) as sim_http:
        prompts = (await sim_http.get("/_sim/prompts")).json()
        knobs = (await sim_http.get("/_sim/config")).json()
    assert input_digest(TOP_MOVERS_ASSET, prompt) in prompts

    result = (await http.get(f"/task/{task_id}/result")).json()
    section = result["data"]["top_movers"]
    assert section["response"] == ""
    [produced] = section["files"]
    assert produced["name"] == f"{task_id}_top_movers.md"
    assert produced["url"] == f"/files/{produced['file_id']}"
    assert result["data"]["portfolio_snapshot"]["files"] == []
    asked = files_pb2.DownloadRequest(file_id=produced["file_id"], owner=owner)
    chunks = [chunk async for chunk in files.Download(asked, timeout=10)]
    assert chunks[0].meta.sha256 == produced["sha256"]
    answer, _ = answer_for(TOP_MOVERS_ASSET, prompt, knobs["cost_min"], knobs["cost_max"])
    assert b"".join(c.data for c in chunks[1:]).decode() == answer

    async def meta_code(file_id: str) -> grpc.StatusCode:
        request = files_pb2.FileRequest(file_id=file_id, owner=owner)
        try:
            await files.GetMeta(request, timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    # The temporary input goes right after the task ends (the end is visible first).
    await assert_eventually(
        lambda: meta_code(movers.file_id),
        lambda code: code == grpc.StatusCode.NOT_FOUND,
        what="the temporary input deleted",
    )
    assert await meta_code(kept.file_id) == grpc.StatusCode.OK


async def test_a_file_of_another_owner_is_refused_like_a_missing_one(
    files: Any, client: tuple[httpx.AsyncClient, str]
) -> None:
    http, _ = client
    bobs = await upload(files, "acme/bob", b"bob's", "b.txt", "text/plain", False)
    missing = f"f_{'0' * 32}_{'1' * 24}"

    answers = [
        await submit(http, [{"top_movers_data": {"file_id": file_id}}])
        for file_id in (bobs.file_id, missing)
    ]

    assert [a.status_code for a in answers] == [422, 422]
    assert [a.json()["detail"] for a in answers] == [
        f"data[0].top_movers_data: file {file_id} not found" for file_id in (bobs.file_id, missing)
    ]
