"""The whole platform as real processes on free loopback ports, as ``make run`` starts it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from scripts.devstack import ROOT, Ports, Stack
from scripts.ports import free_ports

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


def loopback_ports(*, orchestrators: int = 1, workers: int = 1, s3: int | None = None) -> Ports:
    """Ports for a stack on loopback, each free now and all distinct (``s3``: the S3 server's,
    when given: drawn through scripts.ports too, which never hands a port out twice)."""
    gateway, storage, simulator, drawn_s3, *rest = free_ports(4 + orchestrators + workers)
    return Ports(
        gateway=gateway,
        orchestrators=rest[:orchestrators],
        storage=storage,
        simulator=simulator,
        s3=s3 if s3 is not None else drawn_s3,
        workers=rest[orchestrators:],
    )


def changed_config(base: Path, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Writes the repository's config.json with ``sections``' fields set (section name ->
    field -> value) to ``base``; the settings that point the orchestrators, workers and gateway
    at it."""
    config = json.loads((ROOT / "config.json").read_text())
    for name, fields in sections.items():
        config["sections"][name].update(fields)
    path = base / "config.json"
    path.write_text(json.dumps(config))
    return {f"{prefix}_CONFIG_PATH": str(path) for prefix in ("ORCH", "WORKER", "GATEWAY")}


@contextlib.contextmanager
def running(base: Path, ports: Ports, env: Mapping[str, str], bucket: str) -> Iterator[Stack]:
    """The platform started on ``ports`` with ``env``, its state and logs under ``base``;
    stopped on leaving (the logs printed first with ``E2E_SHOW_LOGS`` set)."""
    platform = Stack(ports, base / "state", log_dir=base / "logs", env=dict(env), bucket=bucket)
    platform.start(timeout=60)
    try:
        yield platform
    finally:
        platform.stop()
        if os.environ.get("E2E_SHOW_LOGS"):
            for name in platform.procs:
                print(f"----- {name}\n{platform.log_tail(name, 200)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    with running(base, loopback_ports(workers=2), FAST, BUCKET) as platform:
        yield platform


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
