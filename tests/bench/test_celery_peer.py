"""The Celery peer end to end: real Redis, a real Celery worker process, the platform stand-in
and an S3 server, driven through its HTTP front like the benchmark drives it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from bench.chaos import SEED
from bench.peers.stack import BUCKET, PeerStack
from scripts import seaweedfs
from simulator.answers import answer_for

pytestmark = pytest.mark.e2e

ASSETS = (
    "c7b75809-063a-4f9c-80a8-496e88ed4894",
    "a9fdeb96-cdfa-4a48-9467-bf97a06f8738",
    "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
)
PASSWORD = "peer-Pa55word"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerStack]:
    peer = PeerStack(tmp_path_factory.mktemp("peer"), s3_server="moto", poll_s=0.1)
    peer.start(timeout=90)
    yield peer
    peer.stop(grace=5)


def call(stack: PeerStack, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key or stack.admin_key}"}
    url = f"http://127.0.0.1:{stack.ports.gateway}{path}"
    return requests.request(method, url, headers=headers, timeout=10, **kw)


def wait_for_end(stack: PeerStack, task_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = call(stack, "GET", f"/task/{task_id}/status").json()["status"]
        if status in ("completed", "error", "cancelled"):
            return str(status)
        time.sleep(0.1)
    raise AssertionError(f"{task_id} did not finish within 30 s (last status {status})")


def test_a_task_runs_its_sections_and_writes_its_document(stack: PeerStack) -> None:
    records = [{**record, "peer_ref": f"{time.time_ns()}"} for record in SEED]
    body = {"username": "ann@example.com", "password": PASSWORD, "data": records}
    submitted = call(stack, "POST", "/task/submit", json=body)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    assert submitted.json()["status"] == "pending"

    assert wait_for_end(stack, task_id) == "completed"

    result = call(stack, "GET", f"/task/{task_id}/result").json()
    answers = [
        answer_for(asset, json.dumps(r), 0.004, 0.24)
        for asset, r in zip(ASSETS, records, strict=True)
    ]
    assert result["status"] == "completed"
    assert [section["response"] for section in result["data"].values()] == [a for a, _ in answers]
    assert result["cost"] == round(sum(cost for _, cost in answers), 4)
    assert result["elapsed_seconds"] > 0

    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports.s3}",
        region_name="us-east-1",
        aws_access_key_id=seaweedfs.ACCESS_KEY,
        aws_secret_access_key=seaweedfs.SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )
    stored = s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")
    raw = stored["Body"].read()
    s3.close()
    doc = json.loads(raw)
    assert doc["task_id"] == task_id and doc["status"] == "completed"
    assert doc["data"] == records and doc["username"] == "ann@example.com"
    assert [step["step"] for step in doc["trace"]] == [
        "Submit",
        "1. Authentication",
        "2. Detect Sections",
        "3. Section portfolio_snapshot",
        "3. Section top_movers",
        "3. Section model_and_rebalancing",
        "4. Aggregate",
    ]
    assert PASSWORD.encode() not in raw
    assert stored["ServerSideEncryption"] == "AES256"

    stats = requests.get(f"http://127.0.0.1:{stack.ports.simulator}/_sim/stats", timeout=5).json()
    assert stats["calls"]["create"] >= 3 and stats["calls"]["prompt"] >= 3
    counts = requests.get(f"http://127.0.0.1:{stack.control_port}/counts", timeout=5).json()
    # Written at submit, at start and at the end, all through the counting proxy.
    assert counts["task_ops"][f"tasks/{task_id}.json"].startswith("PPP")


def test_the_front_checks_keys_input_and_ids(stack: PeerStack) -> None:
    assert (
        call(stack, "GET", "/task/task_20260101000000_00000000/status", key="nope").status_code
        == 401
    )
    assert (
        requests.get(f"http://127.0.0.1:{stack.ports.gateway}/ping", timeout=5).status_code == 200
    )
    bad = call(
        stack, "POST", "/task/submit", json={"username": "u", "password": "p", "data": [{"x": 1}]}
    )
    assert bad.status_code == 422 and "matches no section" in bad.json()["error"]
    assert call(stack, "POST", "/task/submit", data=b"{oops").status_code == 422
    assert call(stack, "POST", "/task/submit", json={"username": "u"}).status_code == 422
    assert call(stack, "GET", "/task/not-a-task/status").status_code == 404
    assert call(stack, "GET", "/task/task_20260101000000_00000000/result").status_code == 404
