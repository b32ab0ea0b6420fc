"""``GET /_sim/timeline``: every prompt's life, bounded, cleared by reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from simulator.settings import SimulatorSettings
from simulator.state import PlatformState, input_digest
from simulator.timeline import Timeline
from tests.helpers import assert_eventually
from tests.simulator.conftest import ASSET, OTHER_ASSET, Sim, StartSimulator


async def timeline(sim: Sim) -> dict[str, dict[str, Any]]:
    answer = await sim.http.get("/_sim/timeline")
    assert answer.status_code == 200
    return dict(answer.json())


async def prompt(sim: Sim, message: str, asset: str = ASSET) -> tuple[str, str, str]:
    """(token, conversation id, message id) of a new prompt."""
    token = await sim.token()
    conv_id = str((await sim.create(token, asset)).json()["conversation_id"])
    answer = await sim.prompt(token, conv_id, message)
    assert answer.status_code == 200, answer.text
    return token, conv_id, str(answer.json()["message_id"])


def at(entry: dict[str, Any], name: str) -> datetime:
    return datetime.fromisoformat(entry[name])


async def test_a_prompt_is_timed_from_its_conversation_to_its_answer(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(latency_median_s=0.2, latency_sigma=0.0)
    before = datetime.now(UTC)
    token, conv_id, message_id = await prompt(sim, "m")

    polls: list[str] = []

    async def poll() -> str:
        polls.append((await sim.poll(token, conv_id, message_id)).json()["status"])
        return polls[-1]

    await assert_eventually(poll, lambda status: status == "SUCCESS", interval=0.05)
    await sim.poll(token, conv_id, message_id)  # a poll after the answer still counts
    after = datetime.now(UTC)

    entry = (await timeline(sim))[message_id]
    assert entry["asset_id"] == ASSET
    assert entry["input"] == input_digest(ASSET, "m")
    assert entry["status"] == "SUCCESS"
    assert entry["polls"] == len(polls) + 1
    assert before <= at(entry, "created_at") <= at(entry, "prompted_at")
    assert at(entry, "ready_at") - at(entry, "prompted_at") == timedelta(seconds=0.2)
    assert at(entry, "ready_at") <= at(entry, "answered_at") <= after
    assert at(entry, "answered_at").utcoffset() == timedelta(0)


async def test_an_unanswered_prompt_has_no_answer_time_and_failures_are_named(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(latency_median_s=0.0, fail_assets=[OTHER_ASSET])
    token, conv_id, failed = await prompt(sim, "x", OTHER_ASSET)
    _, _, waiting = await prompt(sim, "y")
    assert (await sim.poll(token, conv_id, failed)).json()["status"] == "FAILED"

    entries = await timeline(sim)

    assert list(entries) == [failed, waiting]
    assert entries[failed]["status"] == "FAILED"
    assert entries[failed]["polls"] == 1
    assert entries[waiting] | {"answered_at": None, "status": "", "polls": 0} == entries[waiting]


async def test_the_timeline_is_capped_like_messages_and_reset_clears_it(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(max_messages=2)
    ids = [(await prompt(sim, str(n)))[2] for n in range(3)]

    assert list(await timeline(sim)) == ids[1:]

    await sim.http.post("/_sim/reset")

    assert await timeline(sim) == {}


def test_ready_time_is_the_prompt_time_plus_the_drawn_latency() -> None:
    moments = iter(datetime(2026, 1, 2, 3, 4, 5, n, tzinfo=UTC) for n in range(10))
    state = PlatformState(
        SimulatorSettings(seed=1, latency_median_s=1.5, latency_sigma=0.0),
        wall_clock=lambda: next(moments),
    )
    token, _ = state.issue_token("t", "u")
    session = state.session_for(token)
    assert session is not None
    conv_id = state.create_conversation(session, "n", ASSET)

    message_id = state.add_message(session, conv_id, "m")

    assert message_id is not None
    entry = state.timeline()[message_id]
    assert entry["created_at"] == "2026-01-02T03:04:05.000000+00:00"
    assert entry["prompted_at"] == "2026-01-02T03:04:05.000002+00:00"
    assert entry["ready_at"] == "2026-01-02T03:04:06.500002+00:00"


def test_polls_of_unknown_messages_are_ignored() -> None:
    line = Timeline(limit=4)
    line.polled("nope", "SUCCESS", datetime.now(UTC))
    assert len(line) == 0
