"""The platform contract of SPEC §3 as the simulator serves it."""

from __future__ import annotations

import json
import re

import httpx

from simulator.state import answer_for, input_digest
from tests.helpers import assert_eventually
from tests.simulator.conftest import ASSET, GENAI, OTHER_ASSET, Sim, StartSimulator

HEX24 = re.compile(r"^[0-9a-f]{24}$")
RECORD = json.dumps({"top_movers_data": "AAPL +3.2%, MSFT -1.1%"})


async def _answer(sim: Sim, token: str, conv_id: str, message_id: str) -> dict[str, object]:
    async def probe() -> dict[str, object]:
        answer = await sim.poll(token, conv_id, message_id)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    return await assert_eventually(
        probe, lambda body: body["status"] != "IN_PROGRESS", timeout=5, what="final answer"
    )


async def test_token_call_issues_a_bearer_token(sim: Sim) -> None:
    answer = await sim.http.get("/accesstoken/acme", auth=("alice", "pw"))

    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32


async def test_token_call_refuses_missing_empty_or_wrong_credentials(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(password="right-pw")

    missing = await sim.http.get("/accesstoken/acme")
    empty = await sim.http.get("/accesstoken/acme", auth=("alice", ""))
    wrong = await sim.http.get("/accesstoken/acme", auth=("alice", "wrong-pw"))
    malformed = await sim.http.get("/accesstoken/acme", headers={"Authorization": "Basic !!"})
    right = await sim.http.get("/accesstoken/acme", auth=("alice", "right-pw"))

    assert [r.status_code for r in (missing, empty, wrong, malformed)] == [401] * 4
    assert "right-pw" not in wrong.text
    assert right.status_code == 200
    stats = await sim.stats()
    assert stats["calls"]["auth"] == 5
    assert stats["rejected"]["401"] == 4


async def test_a_prompt_is_answered_after_its_latency(start_simulator: StartSimulator) -> None:
    sim = await start_simulator(latency_median_s=0.3)
    token = await sim.token()

    created = await sim.create(token)
    conv_id = created.json()["conversation_id"]
    sent = await sim.prompt(token, conv_id, RECORD)
    message_id = sent.json()["message_id"]
    early = await sim.poll(token, conv_id, message_id)
    final = await _answer(sim, token, conv_id, message_id)

    assert HEX24.match(conv_id) and HEX24.match(message_id)
    assert early.json() == {"status": "IN_PROGRESS", "response": "", "cost": 0.0}
    expected_response, expected_cost = answer_for(ASSET, RECORD, 0.004, 0.24)
    assert final == {"status": "SUCCESS", "response": expected_response, "cost": expected_cost}
    assert json.loads(str(final["response"]))["asset_id"] == ASSET
    assert 0.004 <= expected_cost <= 0.24


async def test_same_input_gives_the_same_answer_and_cost(sim: Sim) -> None:
    token = await sim.token()
    answers = []
    for asset, message in [
        (ASSET, RECORD),
        (ASSET, RECORD),
        (ASSET, RECORD + " "),
        (OTHER_ASSET, RECORD),
    ]:
        conv_id = (await sim.create(token, asset)).json()["conversation_id"]
        message_id = (await sim.prompt(token, conv_id, message)).json()["message_id"]
        answers.append(await _answer(sim, token, conv_id, message_id))

    assert answers[0] == answers[1]
    assert answers[2]["response"] != answers[0]["response"]
    assert answers[3]["response"] != answers[0]["response"]
    stats = await sim.stats()
    assert stats["prompts_by_input"][input_digest(ASSET, RECORD)] == 2
    assert len(stats["prompts_by_input"]) == 3
    assert stats["answers"] == {"success": 4, "failed": 0}
    total = sum(float(str(answer["cost"])) for answer in answers)
    assert stats["cost_served"] == round(total, 4)


async def test_genai_calls_need_a_valid_bearer_token(sim: Sim) -> None:
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]

    for bad in ("not-a-token", "x" * 43):
        assert (await sim.create(bad)).status_code == 401
        assert (await sim.prompt(bad, conv_id, RECORD)).status_code == 401
        assert (await sim.poll(bad, conv_id, message_id)).status_code == 401
    no_header = await sim.http.post(f"{GENAI}/create", json={"asset_version_id": ASSET})

    assert no_header.status_code == 401
    assert no_header.headers["WWW-Authenticate"] == "Bearer"
    assert (await sim.stats())["rejected"]["401"] == 7


async def test_unknown_conversation_or_message_is_404(sim: Sim) -> None:
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]
    other_tenant = await sim.token(tenant="other")

    assert (await sim.prompt(token, "0" * 24, RECORD)).status_code == 404
    assert (await sim.poll(token, conv_id, "0" * 24)).status_code == 404
    assert (await sim.poll(token, "0" * 24, message_id)).status_code == 404
    assert (await sim.poll(other_tenant, conv_id, message_id)).status_code == 404
    assert (await sim.poll(token, conv_id, message_id)).status_code == 200


async def test_tokens_expire_after_their_ttl(start_simulator: StartSimulator) -> None:
    sim = await start_simulator(token_ttl_s=0.2)
    answer = await sim.http.get("/accesstoken/acme", auth=("alice", "pw"))
    token = answer.json()["access_token"]

    assert answer.json()["expires_in"] == 1
    assert (await sim.create(token)).status_code == 200
    await assert_eventually(
        lambda: sim.create(token), lambda r: r.status_code == 401, what="token expiry"
    )


async def test_fail_assets_end_failed_with_a_reason(sim: Sim) -> None:
    await sim.configure(fail_assets=[OTHER_ASSET])
    token = await sim.token()
    conv_id = (await sim.create(token, OTHER_ASSET)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]

    final = await _answer(sim, token, conv_id, message_id)

    assert final["status"] == "FAILED"
    assert OTHER_ASSET in str(final["error"])
    stats = await sim.stats()
    assert stats["answers"] == {"success": 0, "failed": 1}
    assert stats["cost_served"] == 0


async def test_failure_rate_one_fails_every_answer(sim: Sim) -> None:
    await sim.configure(failure_rate=1.0)
    token = await sim.token()
    conv_id = (await sim.create(token)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, RECORD)).json()["message_id"]

    assert (await _answer(sim, token, conv_id, message_id))["status"] == "FAILED"


async def test_injected_throttling_and_errors(sim: Sim) -> None:
    await sim.configure(throttle_next=1, error_next=1, retry_after_s=0.25)
    token = await sim.token()

    throttled = await sim.create(token)
    failed = await sim.create(token)
    served = await sim.create(token)

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "0.25"
    assert failed.status_code == 503
    assert served.status_code == 200
    stats = await sim.stats()
    assert stats["rejected"] == {"401": 0, "429": 1, "5xx": 1}
    assert stats["calls"]["create"] == 3
    assert stats["calls"]["auth"] == 1


async def test_throttle_rate_one_throttles_every_genai_call_but_not_auth(sim: Sim) -> None:
    await sim.configure(throttle_rate=1.0)
    token = await sim.token()

    answers = [await sim.create(token) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 429]
    assert (await sim.stats())["rejected"]["429"] == 3


async def test_health(sim: Sim) -> None:
    answer = await sim.http.get("/_sim/health")

    assert answer.json() == {"status": "ok"}


async def test_bad_request_body_is_422(sim: Sim) -> None:
    token = await sim.token()

    answer = await sim.http.post(
        f"{GENAI}/create",
        json={"conversation_name": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert answer.status_code == 422


async def test_served_over_real_http(sim: Sim) -> None:
    async with httpx.AsyncClient() as other:
        answer = await other.get(f"{sim.server.url}/_sim/health")

    assert answer.status_code == 200
