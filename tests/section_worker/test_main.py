"""``python -m section_worker`` as a process with mutual TLS: serves, drains on SIGTERM,
refuses bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.channels import open_channel
from common.tls import Identity, Role, ensure_certificates
from tests.helpers import assert_eventually, free_port
from tests.section_worker.conftest import ASSET, PASSWORD, Sim
from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ensure_certificates(directory)
    return directory


async def test_sigterm_lets_the_running_job_finish_then_exits(sim: Sim, certs: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WORKER_TLS_DIR": str(certs),
        "WORKER_PORT": str(port),
        "WORKER_PLATFORM_URL": sim.url,
        "WORKER_POLL_INITIAL_S": "0.05",
        "WORKER_SHUTDOWN_GRACE_S": "5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "section_worker", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        orchestrator = Identity.load(certs, Role.ORCHESTRATOR)
        async with open_channel(f"127.0.0.1:{port}", orchestrator, Role.WORKER) as channel:
            stub = worker_pb2_grpc.SectionWorkerServiceStub(channel)

            async def load() -> Any:
                try:
                    return await stub.GetLoad(worker_pb2.GetLoadRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return None

            await assert_eventually(load, lambda answer: answer is not None, what="worker up")
            await sim.configure(latency_median_s=0.5)
            call = stub.RunSection(
                worker_pb2.SectionJob(
                    job_id="t:s",
                    task_id="t",
                    section="s",
                    asset_id=ASSET,
                    record_json="{}",
                    tenant="acme",
                    username="alice",
                    access_token=await sim.token(),
                )
            )
            assert (await call.read()).progress.stage == worker_pb2.STAGE_ACCEPTED
            process.send_signal(signal.SIGTERM)
            events = []
            while (event := await call.read()) is not grpc.aio.EOF:
                events.append(event)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert events[-1].result.success, events[-1].result.error
    assert process.returncode == 0
    log = stderr.decode()
    assert f"section_worker listening on 127.0.0.1:{port}" in log
    assert "draining: 1 job(s) in flight" in log
    assert PASSWORD not in log


async def test_a_bad_setting_stops_start_up_naming_it() -> None:
    env = {**os.environ, "WORKER_MAX_CONCURRENT_JOBS": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "section_worker", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 1
    assert "WORKER_MAX_CONCURRENT_JOBS" in stderr.decode()
