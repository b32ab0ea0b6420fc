"""The simulator's own controls: stats, reset, runtime config and bounded memory."""

from __future__ import annotations

import json

from tests.helpers import assert_eventually
from tests.simulator.conftest import ASSET, OTHER_ASSET, Sim, StartSimulator

RECORD = json.dumps({"Market Value": "12000000"})


async def test_reset_clears_counters_tokens_and_conversations(sim: Sim) -> None:
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    await sim.prompt(token, conv_id, RECORD)
    await sim.configure(throttle_rate=0.5)

    cleared = await sim.http.post("/_sim/reset")
    after = await sim.create(token)

    assert cleared.status_code == 200
    assert cleared.json()["calls"] == {"auth": 0, "create": 0, "prompt": 0, "poll": 0}
    assert cleared.json()["prompts_by_input"] == {}
    assert cleared.json()["live"] == {"tokens": 0, "conversations": 0, "messages": 0}
    assert after.status_code == 401
    config = (await sim.http.get("/_sim/config")).json()
    assert config["throttle_rate"] == 0.5


async def test_reset_with_config_restores_the_start_up_knobs(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(cost_max=0.1)
    await sim.configure(cost_max=0.2, fail_assets=[ASSET])

    await sim.http.post("/_sim/reset", params={"config": "true"})

    config = (await sim.http.get("/_sim/config")).json()
    assert config["cost_max"] == 0.1
    assert config["fail_assets"] == []


async def test_config_patch_changes_only_what_it_names(sim: Sim) -> None:
    changed = await sim.configure(fail_assets=[OTHER_ASSET], token_ttl_s=5)

    assert changed["fail_assets"] == [OTHER_ASSET]
    assert changed["token_ttl_s"] == 5
    assert changed["cost_min"] == 0.004
    answer = await sim.http.get("/accesstoken/t", auth=("u", "p"))
    assert answer.json()["expires_in"] == 5


async def test_config_patch_refuses_bad_values(sim: Sim) -> None:
    bad_bodies: list[object] = [
        {"throttle_rate": 1.5},
        {"error_rate": -0.1},
        {"cost_min": 0.5, "cost_max": 0.1},
        {"no_such_knob": 1},
        {"fail_assets": 5},
        ["throttle_rate", 1],
    ]

    answers = [await sim.http.patch("/_sim/config", json=body) for body in bad_bodies]

    assert [a.status_code for a in answers] == [422] * len(bad_bodies)
    assert "throttle_rate" in answers[0].text
    config = (await sim.http.get("/_sim/config")).json()
    assert config["throttle_rate"] == 0.0
    assert config["cost_min"] == 0.004


async def test_cost_is_counted_once_however_often_an_answer_is_polled(sim: Sim) -> None:
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]
    final = await assert_eventually(
        lambda: sim.poll(token, conv_id, message_id),
        lambda r: r.json()["status"] == "SUCCESS",
        what="answer",
    )
    again = await sim.poll(token, conv_id, message_id)

    assert again.json() == final.json()
    stats = await sim.stats()
    assert stats["cost_served"] == final.json()["cost"]
    assert stats["answers"]["success"] == 1
    assert stats["calls"]["poll"] >= 2


async def test_finished_answers_are_dropped_after_their_retention(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(latency_median_s=0.0, message_retention_s=0.2)
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]

    assert (await sim.poll(token, conv_id, message_id)).json()["status"] == "SUCCESS"
    await assert_eventually(sim.stats, lambda s: s["live"]["messages"] == 0, what="message dropped")
    assert (await sim.poll(token, conv_id, message_id)).status_code == 404


async def test_messages_and_conversations_are_capped(start_simulator: StartSimulator) -> None:
    sim = await start_simulator(max_messages=2, max_conversations=2)
    token = await sim.token()
    ids = []
    for n in range(3):
        conv_id = (await sim.create(token)).json()["conversation_id"]
        ids.append((conv_id, (await sim.prompt(token, conv_id, f"{n}")).json()["message_id"]))

    live = (await sim.stats())["live"]
    assert live["messages"] == 2
    assert live["conversations"] == 2
    assert (await sim.poll(token, *ids[0])).status_code == 404
    assert (await sim.poll(token, *ids[2])).status_code == 200


async def test_asset_knobs_merge_per_field_and_null_removes(sim: Sim) -> None:
    first = await sim.configure(assets={ASSET: {"throttle_rate": 1.0, "retry_after_s": 2}})
    merged = await sim.configure(assets={ASSET: {"retry_after_s": None, "down": True}})
    added = await sim.configure(assets={OTHER_ASSET: {"latency_median_s": 5}})
    dropped = await sim.configure(assets={ASSET: None})
    cleared = await sim.configure(assets=None)

    assert first["assets"][ASSET] == {
        "latency_median_s": None,
        "latency_sigma": None,
        "latency_max_s": None,
        "throttle_rate": 1.0,
        "error_rate": None,
        "failure_rate": None,
        "retry_after_s": 2.0,
        "down": False,
        "down_from": None,
        "down_until": None,
    }
    assert merged["assets"][ASSET]["throttle_rate"] == 1.0
    assert merged["assets"][ASSET]["retry_after_s"] is None
    assert merged["assets"][ASSET]["down"] is True
    assert set(added["assets"]) == {ASSET, OTHER_ASSET}
    assert set(dropped["assets"]) == {OTHER_ASSET}
    assert cleared["assets"] == {}
    assert cleared["throttle_rate"] == 0.0


async def test_asset_knobs_refuse_bad_values(sim: Sim) -> None:
    await sim.configure(assets={ASSET: {"error_rate": 0.5}})
    bad_bodies: list[object] = [
        {"assets": {ASSET: {"throttle_rate": 2}}},
        {"assets": {ASSET: {"latency_sigma": -1}}},
        {"assets": {ASSET: {"no_such_knob": 1}}},
        {"assets": {ASSET: 5}},
        {"assets": [ASSET]},
    ]

    answers = [await sim.http.patch("/_sim/config", json=body) for body in bad_bodies]

    assert [a.status_code for a in answers] == [422] * len(bad_bodies)
    assert "throttle_rate" in answers[0].text
    config = (await sim.http.get("/_sim/config")).json()
    assert set(config["assets"]) == {ASSET}
    assert config["assets"][ASSET]["error_rate"] == 0.5
