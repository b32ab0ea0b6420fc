"""Job kinds end to end, every service a real process: a CSV profiled through Agensium's calls
(no platform credentials), a CSV transformed chunk by chunk by the simulator and downloaded,
a file of the wrong type refused at submission, and a worker killed mid-profile and
mid-transform."""

from __future__ import annotations

import csv
import io
import signal
import statistics
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from scripts.devstack import Stack
from section_worker.kinds import tables
from simulator.answers import COMPUTED, computed, input_digest
from tests.e2e.conftest import FAST, changed_config, loopback_ports, running
from tests.e2e.test_platform import PASSWORD, wait_finished
from tests.helpers import assert_eventually, free_port

pytestmark = pytest.mark.e2e
# A chunk costs its rows' price: kept well under the tenant's task ceiling ($2).
CHEAP = {"SIM_COST_MIN": "0.001", "SIM_COST_MAX": "0.002"}
TRANSFORM_ASSET = "5d2e8f7a-1b3c-4d9e-8f60-7a1b2c3d4e5f"  # table_transform's first asset


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("kinds-stack")
    chunks = {"table_transform": {"options": {"chunk_rows": 7, "parallel_chunks": 3}}}
    env = FAST | changed_config(base, chunks) | CHEAP
    with running(base, loopback_ports(), env, "e2e-kinds") as platform:
        yield platform


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{stack.ports.gateway}"
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        made = await http.post(
            "/admin/keys",
            json={"name": f"kinds{free_port()}", "tenant": "acme", "role": "client"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        http.headers["Authorization"] = f"Bearer {made.json()['key']}"
        yield http


def _profile_csv() -> tuple[bytes, list[float], list[str]]:
    """40 rows: amount with 4 empty cells, city with 3 values, and one row of 4 fields."""
    amounts = [float(i) * 1.5 for i in range(40)]
    cities = ["Paris", "Oslo", "Rome"]
    lines = ["amount,city"]
    kept = []
    for i, amount in enumerate(amounts):
        if i % 10 == 3:
            lines.append(f",{cities[i % 3]}")
        else:
            kept.append(amount)
            lines.append(f"{amount},{cities[i % 3]}" + (",extra,more" if i == 20 else ""))
    return ("\n".join(lines) + "\n").encode(), kept, [cities[i % 3] for i in range(40)]


async def test_profile_async_profiles_a_csv_with_known_figures(api: httpx.AsyncClient) -> None:
    data, amounts, cities = _profile_csv()
    submitted = await api.post("/profile/async", files={"file": ("known.csv", data, "text/csv")})
    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    assert body["status"] == "PENDING" and body["task_id"].startswith("task_")

    async def state() -> dict:
        reply = await api.get(f"/tasks/{body['task_id']}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    done = await assert_eventually(
        state, lambda s: s["status"] in ("SUCCESS", "FAILURE"), timeout=60, interval=0.3
    )
    assert done["status"] == "SUCCESS", done
    profile = done["result"]
    assert profile["file"]["rows"] == 40 and profile["file"]["columns"] == 2
    amount, city = profile["columns"]
    assert amount["name"] == "amount" and amount["type"] == "float"
    assert amount["count"] == len(amounts) == 36 and amount["nulls"] == 4
    assert amount["distinct"] == 36
    assert amount["mean"] == pytest.approx(statistics.fmean(amounts))
    assert amount["std"] == pytest.approx(statistics.stdev(amounts))
    assert amount["min"] == min(amounts) and amount["max"] == max(amounts)
    assert city["distinct"] == 3 and city["nulls"] == 0 and city["count"] == 40
    tops = {t["value"]: t["count"] for t in city["top_values"]}
    assert tops == {c: cities.count(c) for c in set(cities)}
    assert profile["malformed"]["ragged_rows"] == 1
    assert profile["malformed"]["ragged_samples"][0]["row"] == 21


async def test_profile_async_refuses_a_file_of_the_wrong_type(api: httpx.AsyncClient) -> None:
    reply = await api.post("/profile/async", files={"file": ("notes.pdf", b"%PDF-1.4", "a/b")})
    assert reply.status_code == 422
    assert "only .csv, .xlsx, .parquet files can be profiled" in reply.json()["detail"]
    raw = await api.post("/profile/async", content=b"a,b\n1,2\n")
    assert raw.status_code == 422


async def test_a_table_is_transformed_in_order_and_downloaded(api: httpx.AsyncClient) -> None:
    rows = [{"name": f"client {i}", "a": str(i), "b": str(i * 2)} for i in range(1, 31)]
    text = io.StringIO()
    writer = csv.DictWriter(text, ["name", "a", "b"])
    writer.writeheader()
    writer.writerows(rows)
    uploaded = await api.post(
        "/files?temporary=true",
        files={"file": ("clients.csv", text.getvalue().encode(), "text/csv")},
    )
    assert uploaded.status_code == 201, uploaded.text
    record = {"instruction": "add the sum", "table_file": {"file_id": uploaded.json()["file_id"]}}
    submitted = await api.post(
        "/task/submit", json={"username": "ann", "password": PASSWORD, "data": [record]}
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    final = await wait_finished(api, [task_id], within=90)
    assert final[task_id]["status"] == "completed", final
    assert final[task_id]["sections"][0]["progress"] == "chunks 5/5"
    result = (await api.get(f"/task/{task_id}/result")).json()
    section = result["data"]["table_transform"]
    summary = section["result"]
    assert summary["rows"] == 30 and summary["chunks"] == 5 and summary["failed_chunks"] == []
    assert section["cost"] > 0
    output = await api.get(summary["output_file"]["url"])
    assert output.status_code == 200
    got = list(csv.DictReader(io.StringIO(output.text)))
    assert [r["name"] for r in got] == [r["name"] for r in rows]
    for given, out in zip(rows, got, strict=True):
        assert out[COMPUTED] == str(computed(given)), out
        assert out["_error"] == ""
    # The temporary input went with the task's end.
    gone = await api.get(f"/files/{uploaded.json()['file_id']}")
    assert gone.status_code == 404


async def test_a_worker_killed_mid_profile_is_replaced_and_the_profile_finishes(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    rows = 1_500_000  # tens of MB: seconds of profiling, so the kill lands mid-profile
    ids = 400_000  # distinct: counted exactly (under exact_distinct_max)
    data = b"id,amount,city\n" + b"".join(
        b"%d,%d.5,%s\n" % (i % ids, i % 1000, b"Oslo" if i % 2 else b"Rome") for i in range(rows)
    )
    submitted = await api.post("/profile/async", files={"file": ("big.csv", data, "text/csv")})
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]

    async def progress() -> str:
        status = (await api.get(f"/task/{task_id}/status")).json()
        (section,) = status["sections"]
        return f"{section['status']} {section['progress']}"

    await assert_eventually(
        progress,
        lambda p: p.startswith("running profiled") and not p.endswith(" 0%"),
        timeout=60,
        interval=0.05,
        what="the profile under way",
    )
    stack.kill("worker-1", signal.SIGKILL)
    assert (await api.get(f"/tasks/{task_id}")).json()["status"] == "STARTED"
    stack.launch("worker-1")

    async def state() -> dict:
        return (await api.get(f"/tasks/{task_id}")).json()

    done = await assert_eventually(
        state, lambda s: s["status"] in ("SUCCESS", "FAILURE"), timeout=120, interval=0.3
    )
    assert done["status"] == "SUCCESS", done
    profile = done["result"]
    assert profile["file"]["rows"] == rows and profile["file"]["columns"] == 3
    ident, amount, city = profile["columns"]
    assert ident["distinct"] == ids and ident["distinct_method"] == "exact"
    assert amount["max"] == 999.5 and amount["count"] == rows
    assert {t["value"] for t in city["top_values"]} == {"Oslo", "Rome"}


async def test_a_worker_killed_mid_transform_costs_no_answered_chunk_twice(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    sim = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.simulator}", timeout=10)
    await sim.post("/_sim/reset")
    await sim.patch("/_sim/config", json={"latency_median_s": 0.4, "latency_sigma": 0.1})
    rows = [{"name": f"c{i}", "a": str(i), "b": str(i % 7)} for i in range(1, 127)]
    text = io.StringIO()
    writer = csv.DictWriter(text, ["name", "a", "b"])
    writer.writeheader()
    writer.writerows(rows)
    uploaded = await api.post(
        "/files?temporary=true",
        files={"file": ("many.csv", text.getvalue().encode(), "text/csv")},
    )
    instruction = "add the sum"
    record = {"instruction": instruction, "table_file": {"file_id": uploaded.json()["file_id"]}}
    submitted = await api.post(
        "/task/submit", json={"username": "ann", "password": PASSWORD, "data": [record]}
    )
    task_id = submitted.json()["task_id"]
    chunk_prompts = {
        chunk: input_digest(
            TRANSFORM_ASSET, tables.chunk_prompt(instruction, ["name", "a", "b"], rows[at : at + 7])
        )
        for chunk, at in enumerate(range(0, len(rows), 7))
    }
    assert len(chunk_prompts) == 18

    async def kept() -> set[int]:
        listing = (await api.get("/files?limit=1000")).json()["files"]
        names = [f["name"] for f in listing if f["name"].startswith(f"{task_id}_table_transform")]
        return {int(name.rsplit("-", 1)[1].split(".")[0]) for name in names}

    await assert_eventually(kept, lambda k: len(k) >= 4, timeout=60, what="4 chunks kept")
    stack.kill("worker-1", signal.SIGKILL)
    kept_at_kill = await kept()
    try:
        stack.launch("worker-1")
        done = await wait_finished(api, [task_id], within=120)
    finally:
        await sim.patch("/_sim/config", json={"latency_median_s": 0.05, "latency_sigma": 0.3})
        await sim.aclose()
    assert done[task_id]["status"] == "completed", done
    assert 4 <= len(kept_at_kill) < 18
    sent = await sim_prompts(stack)
    # Every chunk was asked; none kept before the kill was asked again.
    assert set(chunk_prompts.values()) <= set(sent)
    for chunk in kept_at_kill:
        assert len(sent[chunk_prompts[chunk]]) == 1, (chunk, sent[chunk_prompts[chunk]])
    result = (await api.get(f"/task/{task_id}/result")).json()["data"]["table_transform"]
    summary = result["result"]
    assert summary["chunks_reused"] >= len(kept_at_kill) and summary["failed_chunks"] == []
    output = list(csv.DictReader(io.StringIO((await api.get(summary["output_file"]["url"])).text)))
    assert [r["name"] for r in output] == [r["name"] for r in rows]
    assert all(o[COMPUTED] == str(computed(r)) for r, o in zip(rows, output, strict=True))
    assert await kept() == set()  # the kept chunks went with the success


async def sim_prompts(stack: Stack) -> dict[str, list[str]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.simulator}") as sim:
        return dict((await sim.get("/_sim/prompts")).json())
