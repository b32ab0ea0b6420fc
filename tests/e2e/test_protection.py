"""Protected AI calls end to end: two orchestrators and three workers sharing their limits
through Redis, every process real, on a configuration of its own (each test has its section
and assets, so their cool-downs, breakers and budgets never meet):

- an asset throttled 100 %: every section answered by the next asset, none failed; the asset
  cools down, then is probed again;
- an asset down: its breaker opens after the threshold (published to every worker), and a
  half-open probe closes it once the asset is back;
- a tenant's spent budget fails its further sections with a clear message while another
  tenant's sections succeed;
- an asset's concurrency limit holds across the three workers (the simulator's most prompts
  written at once never passes it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scripts.devstack import Stack
from tests.e2e.conftest import BUCKET, FAST, loopback_ports, running
from tests.e2e.test_platform import PASSWORD, wait_finished

pytestmark = pytest.mark.e2e

COOLDOWN_S = 1.5
OPEN_S = 4.0
FAILURES = 3
LIMITED_CONCURRENCY = 4
BREAKER = {
    "failures": FAILURES,
    "failure_ratio": 1.0,
    "window_s": 60,
    "min_calls": 1000,
    "open_s": OPEN_S,
    "half_open_probes": 1,
}
CONFIG: dict[str, Any] = {
    "sections": {
        "throttled": {"assets": ["thr-a", "thr-b"], "fields": ["thr"], "timeout_s": 30},
        "outage": {"assets": ["out-a", "out-b"], "fields": ["out"], "timeout_s": 30},
        "budget": {"assets": ["bud-a"], "fields": ["bud"], "timeout_s": 30},
        "limited": {"assets": ["lim-a"], "fields": ["lim"], "timeout_s": 60},
    },
    "assets": {
        "*": {"cooldown_s": COOLDOWN_S, "max_cost": 0.15, "breaker": BREAKER},
        "lim-a": {"concurrency": LIMITED_CONCURRENCY, "rpm": 10_000},
    },
    "tenants": {
        "*": {},
        "acme": {"budget_day": 0.3, "on_budget": "fail"},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("protected")
    config = base / "config.json"
    config.write_text(json.dumps(CONFIG))
    env = {
        **FAST,
        "ORCH_CONFIG_PATH": str(config),
        "WORKER_CONFIG_PATH": str(config),
        # Every answer costs $0.10, so the budget's arithmetic is exact.
        "SIM_COST_MIN": "0.1",
        "SIM_COST_MAX": "0.1",
    }
    ports = loopback_ports(orchestrators=2, workers=3)
    with running(base, ports, env, BUCKET) as platform:
        assert platform.shared_limits  # three workers share their limits through Redis
        yield platform


async def submit(client: httpx.AsyncClient, record: dict[str, Any], **headers: str) -> str:
    body = {"username": "user@example.com", "password": PASSWORD, "data": [record]}
    reply = await client.post("/task/submit", json=body, headers=headers)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


async def section_of(client: httpx.AsyncClient, task_id: str, **headers: str) -> dict[str, Any]:
    result = (await client.get(f"/task/{task_id}/result", headers=headers)).json()
    (section,) = result["data"].values()
    return dict(section)


def path(section: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["asset_id"], a["outcome"]) for a in section["attempts"]]


async def asset_stats(sim: httpx.AsyncClient, asset: str) -> dict[str, Any]:
    return dict((await sim.get("/_sim/stats")).json()["by_asset"].get(asset, {}))


async def run_one(api: httpx.AsyncClient, record: dict[str, Any]) -> dict[str, Any]:
    task_id = await submit(api, record)
    await wait_finished(api, [task_id], within=60)
    return await section_of(api, task_id)


async def test_a_throttled_asset_hands_every_section_to_the_next_and_is_probed_later(
    api: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    throttle = {"assets": {"thr-a": {"throttle_rate": 1.0, "retry_after_s": COOLDOWN_S}}}
    (await sim.patch("/_sim/config", json=throttle)).raise_for_status()
    ids = [await submit(api, {"thr": n}) for n in range(8)]
    done = await wait_finished(api, ids, within=60)

    assert {s["status"] for s in done.values()} == {"completed"}
    sections = [await section_of(api, task_id) for task_id in ids]
    assert {s["model_used"] for s in sections} == {"thr-b"}
    assert {s["asset_id"] for s in sections} == {"thr-b"}
    for section in sections:
        first, answered = path(section)
        assert first[0] == "thr-a" and first[1] in ("throttled", "cooling_down"), section
        assert answered == ("thr-b", "answered")
        assert section["cost"] == pytest.approx(0.1)
    # The cool-down is shared: most sections skipped thr-a without calling it.
    throttled = sum(path(s)[0][1] == "throttled" for s in sections)
    assert throttled >= 1
    assert (await asset_stats(sim, "thr-a"))["throttled"] == throttled

    # After the cool-down the asset is tried again (still throttled: probed, then skipped).
    await asyncio.sleep(COOLDOWN_S + 0.5)
    probed = await run_one(api, {"thr": "probe"})
    assert path(probed) == [("thr-a", "throttled"), ("thr-b", "answered")]
    # Once it answers again, it writes the sections.
    (await sim.patch("/_sim/config", json={"assets": {"thr-a": None}})).raise_for_status()
    await asyncio.sleep(COOLDOWN_S + 0.5)
    back = await run_one(api, {"thr": "back"})
    assert path(back) == [("thr-a", "answered")]
    assert back["model_used"] == "thr-a"


async def test_an_asset_that_is_down_opens_its_breaker_and_a_probe_closes_it(
    api: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    (await sim.patch("/_sim/config", json={"assets": {"out-a": {"down": True}}})).raise_for_status()
    paths: list[list[tuple[str, str]]] = []
    # Each worker counts its own failures; the first to reach the threshold publishes the open
    # state to all: at most (threshold - 1) failures per worker, plus the one that opens it.
    most_failures = 3 * (FAILURES - 1) + 1
    for n in range(most_failures + 1):
        section = await run_one(api, {"out": n})
        assert section["status"] == "completed" and section["model_used"] == "out-b", section
        paths.append(path(section))
        if paths[-1][0] == ("out-a", "breaker_open"):
            break
    failures = [p for p in paths if p[0] == ("out-a", "failed")]
    assert paths[-1] == [("out-a", "breaker_open"), ("out-b", "answered")], paths
    assert FAILURES <= len(failures) <= most_failures
    # Published: whichever worker runs them, the next sections skip the asset too.
    # At once, so that all three run within open_s even on a slow machine.
    calls_before = (await asset_stats(sim, "out-a"))["create"]
    sections = await asyncio.gather(*(run_one(api, {"out": f"open-{n}"}) for n in range(3)))
    for section in sections:
        assert path(section)[0] == ("out-a", "breaker_open"), section
    assert (await asset_stats(sim, "out-a"))["create"] == calls_before

    # The asset comes back; after open_s a half-open probe gets through and closes the breaker.
    (await sim.patch("/_sim/config", json={"assets": {"out-a": None}})).raise_for_status()
    await asyncio.sleep(OPEN_S + 0.5)
    probe = await run_one(api, {"out": "probe"})
    assert path(probe) == [("out-a", "answered")]
    again = await run_one(api, {"out": "closed"})
    assert again["model_used"] == "out-a"


async def test_a_spent_budget_fails_that_tenants_sections_and_not_anothers(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    keys = {}
    for name, tenant in (("ann", "acme"), ("gus", "globex")):
        reply = await api.post(
            "/admin/keys", json={"name": name, "tenant": tenant, "role": "client"}
        )
        assert reply.status_code == 201, reply.text
        keys[tenant] = {"Authorization": f"Bearer {reply.json()['key']}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.ports.gateway}", timeout=20
    ) as client:

        async def run_as(tenant: str, n: int) -> dict[str, Any]:
            task_id = await submit(client, {"bud": n}, **keys[tenant])
            deadline = time.monotonic() + 60
            while True:
                status = (await client.get(f"/task/{task_id}/status", headers=keys[tenant])).json()
                if status["status"] in ("completed", "error") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            return {"task": status, **await section_of(client, task_id, **keys[tenant])}

        # $0.30 a day, $0.15 reserved per section, $0.10 each: two fit, the third does not.
        first, second, third = [await run_as("acme", n) for n in range(3)]
        assert first["status"] == second["status"] == "completed"
        assert third["status"] == "error"
        assert third["task"]["status"] == "error"
        assert third["error"] == (
            "every asset of the chain failed (bud-a budget: tenant acme's daily budget of "
            "$0.30 is spent ($0.20 spent, $0.00 reserved))"
        )
        assert path(third) == [("bud-a", "budget")]
        # The other tenant is unaffected.
        for n in range(3):
            other = await run_as("globex", n)
            assert other["status"] == "completed", other


async def test_an_assets_concurrency_holds_across_three_workers(
    api: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    slow = {"assets": {"lim-a": {"latency_median_s": 0.4, "latency_sigma": 0.0}}}
    (await sim.patch("/_sim/config", json=slow)).raise_for_status()
    ids = await asyncio.gather(*(submit(api, {"lim": n}) for n in range(24)))
    done = await wait_finished(api, list(ids), within=90)

    assert {s["status"] for s in done.values()} == {"completed"}
    stats = await asset_stats(sim, "lim-a")
    assert stats["prompt"] == 24
    assert 1 < stats["max_in_flight"] <= LIMITED_CONCURRENCY, stats
