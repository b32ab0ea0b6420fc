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
from tests.e2e.test_platform import PASSWORD, SEED, TOP_MOVERS_CHAIN
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


@pytest.mark.timeout(180)
async def test_each_tenant_sees_only_its_own_tasks_in_every_endpoint(
    stack: Stack,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    s3,  # type: ignore[no-untyped-def]
) -> None:
    tenants = {"cy": "c1", "di": "d1"}
    keys = {who: (await new_key(api, who, tenant))["key"] for who, tenant in tenants.items()}
    await sim.patch("/_sim/config", json={"fail_assets": TOP_MOVERS_CHAIN})  # retry has work
    own: dict[str, list[str]] = {}
    for who, key in keys.items():
        ids = []
        for _ in range(3):
            reply = await anonymous.post("/task/submit", json=BODY, headers=bearer(key))
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["task_id"])
        own[who] = ids
    for who, key in keys.items():
        await assert_eventually(
            lambda key=key, ids=own[who]: _all_finished(anonymous, key, ids),
            lambda done: done,
            timeout=60,
            what=f"{who}'s tasks finished",
        )

    for who, key in keys.items():
        other = own["di" if who == "cy" else "cy"]
        mine = own[who]
        headers = bearer(key)
        # Pages of the list hold exactly the caller's own tasks.
        seen, token = [], ""
        while True:
            params = {"limit": 2, **({"page_token": token} if token else {})}
            page = (await anonymous.get("/tasks", params=params, headers=headers)).json()
            seen += [t["task_id"] for t in page["tasks"]]
            token = page["next_page_token"]
            if not token:
                break
        assert sorted(seen) == sorted(mine), (who, seen)
        for task_id in mine:
            assert (
                await anonymous.get(f"/task/{task_id}/status", headers=headers)
            ).status_code == 200
        for task_id in other:
            for method, path in [
                ("GET", f"/task/{task_id}/status"),
                ("GET", f"/task/{task_id}/result"),
                ("GET", f"/task/{task_id}/events"),
                ("POST", f"/task/{task_id}/cancel"),
                ("POST", f"/task/{task_id}/retry"),
            ]:
                reply = await anonymous.request(method, path, headers=headers)
                assert (reply.status_code, reply.json()["error"]) == (404, "not_found"), (
                    who,
                    method,
                    path,
                    reply.text,
                )
        # An admin sees both, and can ask for one owner's.
        everyone = (await api.get("/tasks", params={"limit": 100})).json()["tasks"]
        assert set(mine + other) <= {t["task_id"] for t in everyone}
        principal = f"{tenants[who]}/{who}"
        theirs = (await api.get("/tasks", params={"owner": principal})).json()["tasks"]
        assert sorted(t["task_id"] for t in theirs) == sorted(mine)
        assert {(t["owner"], t["tenant"]) for t in theirs} == {(principal, tenants[who])}
        refused = await anonymous.get("/tasks", params={"owner": principal}, headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    # The retry a stranger could not do, the owner can.
    retried = await anonymous.post(f"/task/{own['cy'][0]}/retry", headers=bearer(keys["cy"]))
    assert retried.status_code == 200, retried.text
    await _no_secret_anywhere(stack, s3, [PASSWORD, *keys.values(), stack.admin_key])


async def _all_finished(client: httpx.AsyncClient, key: str, ids: list[str]) -> bool:
    for task_id in ids:
        reply = await client.get(f"/task/{task_id}/status", headers=bearer(key))
        if reply.json()["status"] not in ("completed", "error", "cancelled"):
            return False
    return True


async def _no_secret_anywhere(stack: Stack, s3, secrets: list[str]) -> None:  # type: ignore[no-untyped-def]
    """No password, platform token or API key in clear in any S3 object or service log."""
    tokens = await _platform_tokens(stack)
    needles = [s for s in secrets + tokens if s]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            body = (
                s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"]
                .read()
                .decode(errors="replace")
            )
            for needle in needles:
                assert needle not in body, f"a secret in clear in s3://{BUCKET}/{item['Key']}"
    for path in stack.log_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        for needle in needles:
            assert needle not in text, f"a secret in clear in {path.name}"


async def _platform_tokens(stack: Stack) -> list[str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.simulator}") as sim:
        tokens = (await sim.get("/_sim/tokens")).json()
    assert tokens, "no platform token to look for: the scan would prove nothing"
    return [str(t) for t in tokens]
