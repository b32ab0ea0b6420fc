"""``python -m storage_svc`` as a real process with mutual TLS: start-up, serving its callers
only, SIGTERM, S3 unreachable."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.channels import open_channel
from common.tls import Identity, Role, ensure_certificates
from tests.helpers import assert_eventually, free_port
from tests.storage_svc.conftest import StoreFactory, document, task_id
from wealthai.storage.v1 import files_pb2, files_pb2_grpc, storage_pb2_grpc
from wealthai.storage.v1 import storage_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]

RETAINED_PREFIXES = ["task_", "_owners/", "_leases/", "_idempotency/", "_seals/"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ensure_certificates(directory)
    return directory


async def _start(certs: Path, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storage_svc",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "STORAGE_TLS_DIR": str(certs), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def test_serves_after_preparing_the_bucket_and_stops_cleanly_on_sigterm(
    s3_url: str, make_store: StoreFactory, certs: Path
) -> None:
    port = free_port()
    proc = await _start(
        certs,
        STORAGE_S3_ENDPOINT_URL=s3_url,
        STORAGE_S3_BUCKET="main-test-bucket",
        STORAGE_PORT=str(port),
        TASK_RETENTION_DAYS="9",
    )
    orchestrator = Identity.load(certs, Role.ORCHESTRATOR)
    channel = open_channel(f"127.0.0.1:{port}", orchestrator, Role.STORAGE)
    try:
        health = health_pb2_grpc.HealthStub(channel)

        async def status() -> Any:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return answer.status

        await assert_eventually(
            status,
            lambda s: s == health_pb2.HealthCheckResponse.SERVING,
            timeout=20,
            what="storage_svc SERVING",
        )
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        tid = task_id()
        put = await stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid)))
        got = await stub.GetTask(pb.GetTaskRequest(task_id=tid))
        assert (got.document, got.version) == (document(tid), put.version)
        gateway = Identity.load(certs, Role.GATEWAY)
        async with open_channel(f"127.0.0.1:{port}", gateway, Role.STORAGE) as wrong_role:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await storage_pb2_grpc.StorageServiceStub(wrong_role).GetTask(
                    pb.GetTaskRequest(task_id=tid), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        files = files_pb2_grpc.FileServiceStub(channel)
        start = files_pb2.UploadChunk(start=files_pb2.UploadStart(owner="alice", name="a.txt"))
        meta = await files.Upload(iter([start, files_pb2.UploadChunk(data=b"abc")]))
        listed = await files.ListFiles(files_pb2.ListFilesRequest(owner="alice"))
        assert [f.file_id for f in listed.files] == [meta.file_id]
    finally:
        await channel.close()
        code, log = await _stop(proc)

    assert code == 0, log
    assert "storage_svc listening on" in log
    assert "(mutual TLS)" in log
    assert "storage_svc stopped" in log
    store = await make_store(prepare=False, s3_bucket="main-test-bucket")
    rules = await store.s3.client.get_bucket_lifecycle_configuration(Bucket="main-test-bucket")
    days = {r["ID"]: r.get("Expiration", {}).get("Days") for r in rules["Rules"]}
    assert days == {
        **{f"wealth-ai-task-retention:tasks/{p}": 9 for p in RETAINED_PREFIXES},
        "wealth-ai-file-retention:files/": 1,
        "wealth-ai-abort-multipart:files/": None,
    }


async def test_unreachable_s3_stops_start_up_with_a_clear_message(s3_url: str, certs: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc = await _start(
        certs,
        STORAGE_S3_ENDPOINT_URL=endpoint,
        STORAGE_PORT=str(free_port()),
        STORAGE_STARTUP_TIMEOUT_S="1",
        STORAGE_S3_MAX_ATTEMPTS="1",
        STORAGE_S3_CONNECT_TIMEOUT_S="0.2",
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    log = err.decode(errors="replace")

    assert proc.returncode not in (None, 0), log
    assert f"cannot reach bucket wealth-ai-tasks at {endpoint} within 1s" in log
    assert "S3 not reachable yet" in log
