"""The whole platform as real processes on free loopback ports, as ``make run`` starts it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import boto3
import httpx
import pytest

from scripts.devstack import Ports, Stack
from tests.helpers import free_port

BUCKET = "e2e-tasks"
FAST = {
    "SIM_LATENCY_MEDIAN_S": "0.05",
    "SIM_LATENCY_SIGMA": "0.3",
    "SIM_SEED": "7",
    "WORKER_POLL_INITIAL_S": "0.05",
    "WORKER_POLL_MAX_S": "0.3",
    "WORKER_MAX_CONCURRENT_JOBS": "6",
    "ORCH_WORKER_REFRESH_S": "0.5",
    "ORCH_LEASE_TTL_S": "3",
    "ORCH_LEASE_RENEW_S": "0.5",
    "ORCH_SHUTDOWN_GRACE_S": "2",
    "WORKER_SHUTDOWN_GRACE_S": "2",
    "STORAGE_SHUTDOWN_GRACE_S": "2",
    "GATEWAY_SHUTDOWN_GRACE_S": "2",
    # Some tests submit a batch at once and expect every submission taken; the gateway's
    # admission under overload (429 past 8 at once) is tested in tests/gateway/test_app.py.
    "GATEWAY_MAX_SUBMITS_IN_FLIGHT": "64",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    ports = Ports(
        gateway=free_port(),
        orchestrators=[free_port()],
        storage=free_port(),
        simulator=free_port(),
        s3=free_port(),
        workers=[free_port(), free_port()],
    )
    platform = Stack(ports, base / "state", log_dir=base / "logs", env=FAST, bucket=BUCKET)
    platform.start(timeout=60)
    yield platform
    platform.stop()
    if os.environ.get("E2E_SHOW_LOGS"):
        for name in platform.procs:
            print(f"----- {name}\n{platform.log_tail(name, 200)}")


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, called with the stack's admin key."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.ports.gateway}",
        timeout=20,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    ) as client:
        yield client


@pytest.fixture
async def sim(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's control API, reset before and after each test."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.ports.simulator}", timeout=10
    ) as client:
        (await client.post("/_sim/reset", params={"config": "true"})).raise_for_status()
        yield client
        await client.post("/_sim/reset", params={"config": "true"})


@pytest.fixture
def s3(stack: Stack):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports.s3}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local-secret",
    )
