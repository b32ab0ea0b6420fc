"""Per-asset behaviour: throttling, errors, failures, latency and outages set at runtime for one
asset (``PATCH /_sim/config`` ``assets``), and the counters of ``/_sim/stats`` ``by_asset``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers import assert_eventually
from tests.simulator.conftest import ASSET, OTHER_ASSET, Sim, StartSimulator

THIRD_ASSET = "never-configured-asset"


async def conversation(sim: Sim, token: str, asset: str) -> str:
    answer = await sim.create(token, asset)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["conversation_id"])


async def prompted(sim: Sim, token: str, asset: str, message: str = "m") -> tuple[str, str]:
    """(conversation id, message id) of a new prompt to ``asset``."""
    conv_id = await conversation(sim, token, asset)
    answer = await sim.prompt(token, conv_id, message)
    assert answer.status_code == 200, answer.text
    return conv_id, str(answer.json()["message_id"])


async def final(sim: Sim, token: str, conv_id: str, message_id: str) -> dict[str, Any]:
    answer = await assert_eventually(
        lambda: sim.poll(token, conv_id, message_id),
        lambda r: r.status_code == 200 and r.json()["status"] != "IN_PROGRESS",
        timeout=5,
        what="final answer",
    )
    return dict(answer.json())


async def test_throttling_one_asset_answers_429_on_every_call_reaching_it(sim: Sim) -> None:
    token = await sim.token()
    conv_id, message_id = await prompted(sim, token, ASSET)
    await sim.configure_asset(ASSET, throttle_rate=1.0, retry_after_s=2)

    create = await sim.create(token, ASSET)
    prompt = await sim.prompt(token, conv_id, "again")
    poll = await sim.poll(token, conv_id, message_id)
    other = await prompted(sim, token, OTHER_ASSET)

    for refused in (create, prompt, poll):
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "2"
    assert (await final(sim, token, *other))["status"] == "SUCCESS"
    stats = await sim.stats()
    assert stats["rejected"]["429"] == 3
    assert (
        stats["by_asset"][ASSET] | {"create": 2, "prompt": 2, "poll": 1, "throttled": 3}
        == (stats["by_asset"][ASSET])
    )
    assert stats["by_asset"][OTHER_ASSET]["throttled"] == 0


async def test_an_asset_without_its_own_retry_after_sends_the_global_one(sim: Sim) -> None:
    await sim.configure(retry_after_s=7)
    await sim.configure_asset(ASSET, throttle_rate=1.0)
    token = await sim.token()

    answer = await sim.create(token, ASSET)

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


async def test_an_asset_value_wins_over_the_global_default(sim: Sim) -> None:
    await sim.configure(throttle_rate=1.0, assets={ASSET: {"throttle_rate": 0.0}})
    token = await sim.token()

    assert (await sim.create(token, ASSET)).status_code == 200
    assert (await sim.create(token, OTHER_ASSET)).status_code == 429
    assert (await sim.create(token, THIRD_ASSET)).status_code == 429


async def test_error_rate_one_on_an_asset_answers_503_to_it_alone(sim: Sim) -> None:
    token = await sim.token()
    conv_id = await conversation(sim, token, ASSET)
    await sim.configure_asset(ASSET, error_rate=1.0)

    create = await sim.create(token, ASSET)
    prompt = await sim.prompt(token, conv_id, "m")
    other = await prompted(sim, token, OTHER_ASSET)

    assert (create.status_code, prompt.status_code) == (503, 503)
    assert "Retry-After" not in create.headers
    assert (await final(sim, token, *other))["status"] == "SUCCESS"
    stats = await sim.stats()
    assert stats["rejected"]["5xx"] == 2
    assert stats["by_asset"][ASSET]["errors"] == 2
    assert stats["by_asset"][OTHER_ASSET]["errors"] == 0


async def test_failure_rate_one_on_an_asset_fails_its_answers_alone(sim: Sim) -> None:
    await sim.configure_asset(ASSET, failure_rate=1.0)
    token = await sim.token()

    failed = await final(sim, token, *await prompted(sim, token, ASSET))
    served = await final(sim, token, *await prompted(sim, token, OTHER_ASSET))

    assert failed["status"] == "FAILED"
    assert ASSET in failed["error"]
    assert failed["cost"] == 0
    assert served["status"] == "SUCCESS"
    by_asset = (await sim.stats())["by_asset"]
    assert (by_asset[ASSET]["failed"], by_asset[ASSET]["success"]) == (1, 0)
    assert (by_asset[OTHER_ASSET]["failed"], by_asset[OTHER_ASSET]["success"]) == (0, 1)
    assert by_asset[OTHER_ASSET]["cost_served"] == served["cost"]
    assert by_asset[ASSET]["cost_served"] == 0


async def test_latency_is_drawn_from_the_asset_own_values(sim: Sim) -> None:
    await sim.configure_asset(ASSET, latency_median_s=5, latency_sigma=0.0)
    token = await sim.token()
    slow = await prompted(sim, token, ASSET)
    fast = await prompted(sim, token, OTHER_ASSET)

    assert (await final(sim, token, *fast))["status"] == "SUCCESS"
    assert (await sim.poll(token, *slow)).json()["status"] == "IN_PROGRESS"
    timeline = (await sim.http.get("/_sim/timeline")).json()
    entry = timeline[slow[1]]
    latency = datetime.fromisoformat(entry["ready_at"]) - datetime.fromisoformat(
        entry["prompted_at"]
    )
    assert latency == timedelta(seconds=5)


async def test_an_outage_window_answers_503_to_everything_touching_the_asset(
    start_simulator: StartSimulator,
) -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    sim = await start_simulator(wall_clock=lambda: now[0])
    start = now[0].timestamp()
    token = await sim.token()
    conv_id, message_id = await prompted(sim, token, ASSET)
    await sim.configure_asset(ASSET, down=True, down_from=start + 60, down_until=start + 120)

    before = await sim.create(token, ASSET)
    now[0] += timedelta(seconds=60)
    during = [
        await sim.create(token, ASSET),
        await sim.prompt(token, conv_id, "m"),
        await sim.poll(token, conv_id, message_id),
    ]
    other = await sim.create(token, OTHER_ASSET)
    now[0] += timedelta(seconds=60)
    after = await sim.create(token, ASSET)

    assert before.status_code == 200
    assert [answer.status_code for answer in during] == [503, 503, 503]
    assert "outage" in during[0].json()["detail"]
    assert other.status_code == 200
    assert after.status_code == 200
    assert (await sim.stats())["by_asset"][ASSET]["errors"] == 3


async def test_down_without_an_end_lasts_until_switched_off(sim: Sim) -> None:
    await sim.configure_asset(ASSET, down=True)
    token = await sim.token()

    assert (await sim.create(token, ASSET)).status_code == 503
    await sim.configure_asset(ASSET, down=False)
    assert (await sim.create(token, ASSET)).status_code == 200


async def test_an_outage_ends_at_down_until_in_unix_time(sim: Sim) -> None:
    await sim.configure_asset(ASSET, down=True, down_until=time.time() + 0.5)
    token = await sim.token()

    assert (await sim.create(token, ASSET)).status_code == 503
    await assert_eventually(
        lambda: sim.create(token, ASSET),
        lambda answer: answer.status_code == 200,
        timeout=5,
        what="recovery after down_until",
    )


async def test_by_asset_counts_calls_and_answers_of_each_asset(sim: Sim) -> None:
    token = await sim.token()
    answers = [await final(sim, token, *await prompted(sim, token, ASSET, m)) for m in "ab"]
    await conversation(sim, token, OTHER_ASSET)
    await sim.create(token, "x" * 24)
    await sim.prompt(token, "0" * 24, "unknown conversation")

    stats = await sim.stats()

    assert (
        stats["by_asset"][ASSET] | {"create": 2, "prompt": 2, "success": 2}
        == (stats["by_asset"][ASSET])
    )
    assert stats["by_asset"][ASSET]["poll"] >= 2
    assert stats["by_asset"][ASSET]["cost_served"] == round(
        sum(answer["cost"] for answer in answers), 4
    )
    assert stats["by_asset"][OTHER_ASSET] == {
        "create": 1,
        "prompt": 0,
        "poll": 0,
        "throttled": 0,
        "errors": 0,
        "success": 0,
        "failed": 0,
        "cost_served": 0.0,
        "max_in_flight": 0,
    }
    assert stats["by_asset"]["x" * 24]["create"] == 1
    assert set(stats["by_asset"]) == {ASSET, OTHER_ASSET, "x" * 24}


async def test_max_in_flight_counts_the_prompts_an_asset_writes_at_once(sim: Sim) -> None:
    await sim.configure_asset(ASSET, latency_median_s=30, latency_sigma=0)
    await sim.configure_asset(OTHER_ASSET, latency_median_s=0.01, latency_sigma=0)
    token = await sim.token()
    for message in "abc":
        await prompted(sim, token, ASSET, message)  # all three still being written
    for message in "abc":
        done = await prompted(sim, token, OTHER_ASSET, message)
        await final(sim, token, *done)  # each ready before the next one is sent

    by_asset = (await sim.stats())["by_asset"]
    assert by_asset[ASSET]["max_in_flight"] == 3
    assert by_asset[OTHER_ASSET]["max_in_flight"] == 1


async def test_asset_counters_are_capped_least_recently_reached_first(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(max_messages=2)
    token = await sim.token()
    for asset in (ASSET, OTHER_ASSET, ASSET, THIRD_ASSET):
        await sim.create(token, asset)

    assert set((await sim.stats())["by_asset"]) == {ASSET, THIRD_ASSET}


async def test_reset_clears_asset_counters_and_with_config_the_asset_knobs(sim: Sim) -> None:
    await sim.configure_asset(ASSET, down=True)
    token = await sim.token()
    await sim.create(token, ASSET)

    cleared = (await sim.http.post("/_sim/reset")).json()
    kept = (await sim.http.get("/_sim/config")).json()
    await sim.http.post("/_sim/reset", params={"config": "true"})

    assert cleared["by_asset"] == {}
    assert kept["assets"][ASSET]["down"] is True
    assert (await sim.http.get("/_sim/config")).json()["assets"] == {}
