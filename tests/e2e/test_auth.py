"""API keys end to end, every service a real process: an admin gives two clients of different
tenants their keys, each key works and a missing one does not, a revoked key stops working, keys
survive restarts of the gateway and the orchestrator, and no key is ever in S3 or a log."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import httpx
import pytest

from scripts.devstack import Stack
from tests.e2e.conftest import BUCKET
from tests.e2e.test_platform import PASSWORD, SEED
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

BODY = {"username": "user@example.com", "password": PASSWORD, "data": [SEED[1]]}


@pytest.fixture
async def anonymous(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.ports.gateway}", timeout=20
    ) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(api: httpx.AsyncClient, name: str, tenant: str) -> dict:
    reply = await api.post("/admin/keys", json={"name": name, "tenant": tenant, "role": "client"})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def works(client: httpx.AsyncClient, key: str) -> bool:
    reply = await client.get("/tasks", headers=bearer(key))
    assert reply.status_code in (200, 401, 503), reply.text
    return reply.status_code == 200


def restart(stack: Stack, name: str) -> None:
    stack.kill(name, signal.SIGTERM)
    stack.launch(name, timeout=60)


@pytest.mark.timeout(180)
async def test_keys_of_two_tenants_work_until_revoked_and_survive_restarts(
    stack: Stack,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    s3,  # type: ignore[no-untyped-def]
) -> None:
    ann = await new_key(api, "ann", "acme")
    bob = await new_key(api, "bob", "globex")
    doomed = await new_key(api, "carl", "acme")
    assert len({ann["key"], bob["key"], doomed["key"]}) == 3

    for holder in (ann, bob):
        key = holder["key"]
        submitted = await anonymous.post("/task/submit", json=BODY, headers=bearer(key))
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        status = await anonymous.get(f"/task/{task_id}/status", headers=bearer(key))
        assert status.status_code == 200, status.text
        elsewhere = {"globex" if holder["tenant"] == "acme" else "acme"}.pop()
        refused = await anonymous.post(
            "/task/submit", json={**BODY, "tenant": elsewhere}, headers=bearer(key)
        )
        assert (refused.status_code, refused.json()["errors"][0]["field"]) == (422, "body.tenant")
        forbidden = await anonymous.get("/admin/keys", headers=bearer(key))
        assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")

    missing = await anonymous.get("/tasks")
    assert (missing.status_code, missing.json()["error"]) == (401, "unauthenticated")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert (await anonymous.get("/ping")).status_code in (200, 503)

    assert await works(anonymous, doomed["key"])
    revoked = await api.delete(f"/admin/keys/{doomed['key_id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    await assert_eventually(
        lambda: works(anonymous, doomed["key"]),
        lambda ok: not ok,
        timeout=30,
        interval=0.5,
        what="the revoked key refused",
    )

    listed = (await api.get("/admin/keys")).json()["keys"]
    by_id = {k["key_id"]: k for k in listed}
    assert {ann["key_id"], bob["key_id"], doomed["key_id"]} <= set(by_id)
    assert by_id[doomed["key_id"]]["revoked_at"] and by_id[ann["key_id"]]["revoked_at"] is None
    assert all("key" not in k and "hash" not in k for k in listed)

    restart(stack, "orchestrator-1")
    restart(stack, "gateway")
    for holder in (ann, bob):
        await assert_eventually(
            lambda key=holder["key"]: works(anonymous, key),
            bool,
            timeout=30,
            interval=0.5,
            what=f"{holder['name']}'s key working after the restarts",
        )
    assert not await works(anonymous, doomed["key"])
    assert (await api.get("/admin/keys")).status_code == 200  # the admin key too

    secrets = [ann["key"], bob["key"], doomed["key"], stack.admin_key]
    secret_parts = [key.split("_", 2)[2] for key in secrets[:3]]  # wak_<key id>_<secret>
    stored = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            stored.append(item["Key"])
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()
            for text in secrets + secret_parts:
                assert text not in body, f"a key in clear in s3://{BUCKET}/{item['Key']}"
    assert any(key.endswith(f"_api_keys/{ann['key_id']}.json") for key in stored)

    assert stack.log_dir is not None
    logs = list(stack.log_dir.glob("*.log"))
    assert {"gateway.log", "orchestrator-1.log", "storage.log"} <= {p.name for p in logs}
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets + secret_parts:
            assert secret not in text, f"a key in clear in {path.name}"
