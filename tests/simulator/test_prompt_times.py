"""``GET /_sim/prompts``: when each input was prompted, bounded per input and in inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from simulator.settings import SimulatorSettings
from simulator.state import PROMPT_TIMES_PER_INPUT, PlatformState, input_digest
from tests.simulator.conftest import ASSET, OTHER_ASSET, Sim, StartSimulator


async def conversation(sim: Sim, asset: str = ASSET) -> tuple[str, str]:
    token = await sim.token()
    return token, str((await sim.create(token, asset)).json()["conversation_id"])


async def prompt_times(sim: Sim) -> dict[str, list[str]]:
    answer = await sim.http.get("/_sim/prompts")
    assert answer.status_code == 200
    return dict(answer.json())


async def test_each_prompt_is_timed_under_its_input_digest(sim: Sim) -> None:
    token, conv_id = await conversation(sim)
    _, other_conv = await conversation(sim, OTHER_ASSET)
    before = datetime.now(UTC)
    await sim.prompt(token, conv_id, "same")
    await sim.prompt(token, conv_id, "same")
    await sim.prompt(token, other_conv, "same")
    after = datetime.now(UTC)

    times = await prompt_times(sim)

    assert set(times) == {input_digest(ASSET, "same"), input_digest(OTHER_ASSET, "same")}
    twice = [datetime.fromisoformat(t) for t in times[input_digest(ASSET, "same")]]
    assert len(twice) == 2
    assert all(t.utcoffset() == timedelta(0) for t in twice)
    assert before <= twice[0] <= twice[1] <= after
    assert len(times[input_digest(OTHER_ASSET, "same")]) == 1


async def test_only_the_latest_times_of_an_input_are_kept(sim: Sim) -> None:
    token, conv_id = await conversation(sim)
    for _ in range(PROMPT_TIMES_PER_INPUT + 3):
        await sim.prompt(token, conv_id, "again")

    times = (await prompt_times(sim))[input_digest(ASSET, "again")]
    stats = await sim.stats()

    assert len(times) == PROMPT_TIMES_PER_INPUT
    assert times == sorted(times)
    assert stats["prompts_by_input"][input_digest(ASSET, "again")] == PROMPT_TIMES_PER_INPUT + 3


async def test_inputs_are_capped_like_messages_least_recently_prompted_first(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(max_messages=2)
    token, conv_id = await conversation(sim)
    for message in ("a", "b", "a", "c"):
        await sim.prompt(token, conv_id, message)

    times = await prompt_times(sim)

    assert set(times) == {input_digest(ASSET, "a"), input_digest(ASSET, "c")}
    assert len(times[input_digest(ASSET, "a")]) == 2


async def test_reset_forgets_prompt_times(sim: Sim) -> None:
    token, conv_id = await conversation(sim)
    await sim.prompt(token, conv_id, "x")
    assert await prompt_times(sim)

    await sim.http.post("/_sim/reset")

    assert await prompt_times(sim) == {}


def test_times_come_from_the_wall_clock_in_utc() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    state = PlatformState(SimulatorSettings(seed=1), wall_clock=lambda: moment)
    token, _ = state.issue_token("t", "u")
    session = state.session_for(token)
    assert session is not None
    conv_id = state.create_conversation(session, "n", ASSET)

    assert state.add_message(session, conv_id, "m") is not None

    assert state.prompt_times() == {input_digest(ASSET, "m"): ["2026-01-02T03:04:05.000006+00:00"]}
