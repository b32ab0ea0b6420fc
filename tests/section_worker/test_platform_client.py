"""The platform client against the real simulator: the flow, retries, tokens, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from section_worker.platform_client import (
    AnswerStatus,
    AuthFailed,
    Credentials,
    PlatformClient,
    PlatformUnavailable,
    Retries,
    Throttled,
    TokenRejected,
)
from section_worker.platform_session import PlatformSession
from section_worker.settings import WorkerSettings
from simulator.state import answer_for, input_digest
from tests.helpers import assert_eventually, free_port
from tests.section_worker.conftest import ASSET, CREDENTIALS, PASSWORD, MakeClient, Sim

RECORD = json.dumps({"Market Value": "12000000", "Top Asset": "Equity (65%)"})


async def _session(client: PlatformClient) -> PlatformSession:
    """A session with a token the client fetched for CREDENTIALS."""
    return PlatformSession(client, (await client.authenticate(CREDENTIALS)).value)


async def test_a_session_runs_a_prompt_to_its_answer(sim: Sim, make_client: MakeClient) -> None:
    session = await _session(make_client())

    conv_id = await session.create_conversation(ASSET)
    message_id = await session.send_prompt(conv_id, RECORD)
    answer = await assert_eventually(
        lambda: session.poll(conv_id, message_id),
        lambda a: a.status is not AnswerStatus.IN_PROGRESS,
        what="answer",
    )

    response, cost = answer_for(ASSET, RECORD, 0.004, 0.24)
    assert (answer.status, answer.response, answer.cost) == (AnswerStatus.SUCCESS, response, cost)
    stats = await sim.stats()
    assert session.calls.value == sim.total_calls(stats) - 1  # the token call is not the session's
    assert stats["calls"]["auth"] == 1
    assert stats["prompts_by_input"] == {input_digest(ASSET, RECORD): 1}


async def test_a_throttled_call_waits_for_retry_after_then_succeeds(
    sim: Sim, make_client: MakeClient
) -> None:
    session = await _session(make_client(backoff_base_s=0.001, backoff_max_s=0.001))
    await sim.configure(throttle_next=1, retry_after_s=0.3)

    started = time.monotonic()
    conv_id = await session.create_conversation(ASSET)
    elapsed = time.monotonic() - started

    assert len(conv_id) == 24
    assert elapsed >= 0.3
    stats = await sim.stats()
    assert stats["rejected"]["429"] == 1
    assert stats["calls"]["create"] == 2
    assert session.calls.value == 2


async def test_retry_after_is_capped(sim: Sim, make_client: MakeClient) -> None:
    session = await _session(make_client(retry_after_max_s=0.05))
    await sim.configure(throttle_next=2, retry_after_s=60)

    conv_id = await asyncio.wait_for(session.create_conversation(ASSET), timeout=3)

    assert len(conv_id) == 24
    assert (await sim.stats())["rejected"]["429"] == 2


async def test_5xx_until_the_retries_run_out_is_a_clear_failure(
    sim: Sim, make_client: MakeClient
) -> None:
    session = await _session(make_client(max_retries=2))
    await sim.configure(error_next=10)

    with pytest.raises(PlatformUnavailable) as failed:
        await session.create_conversation(ASSET)

    message = str(failed.value)
    assert "create conversation" in message
    assert "503" in message
    assert "3 attempts" in message
    assert (await sim.stats())["rejected"]["5xx"] == 3


async def test_throttling_until_the_retries_run_out_raises_throttled(
    sim: Sim, make_client: MakeClient
) -> None:
    session = await _session(make_client(max_retries=1))
    await sim.configure(throttle_rate=1.0, retry_after_s=0.01)

    with pytest.raises(Throttled, match=r"send prompt.*429.*2 attempts"):
        await session.send_prompt("0" * 24, RECORD)


async def test_a_prompt_refused_with_503_is_sent_again_but_only_accepted_once(
    sim: Sim, make_client: MakeClient
) -> None:
    session = await _session(make_client())
    conv_id = await session.create_conversation(ASSET)
    await sim.configure(error_next=1)

    await session.send_prompt(conv_id, RECORD)

    stats = await sim.stats()
    assert stats["calls"]["prompt"] == 2
    assert stats["prompts_by_input"] == {input_digest(ASSET, RECORD): 1}


async def test_an_unreachable_platform_is_unavailable(make_client: MakeClient) -> None:
    client = make_client(platform_url=f"http://127.0.0.1:{free_port()}")
    session = PlatformSession(client, "any-token")

    with pytest.raises(PlatformUnavailable, match="create conversation: cannot reach the platform"):
        await session.create_conversation(ASSET)

    assert session.calls.value == 3


async def test_a_prompt_that_never_left_is_sent_again(make_client: MakeClient) -> None:
    # Refused connections: the platform never saw the prompt, so resending risks nothing.
    session = PlatformSession(make_client(platform_url=f"http://127.0.0.1:{free_port()}"), "t")

    with pytest.raises(PlatformUnavailable, match="send prompt: cannot reach the platform"):
        await session.send_prompt("0" * 24, RECORD)

    assert session.calls.value == 3


@contextlib.asynccontextmanager
async def _reading_server(answer: bool) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback server that reads each request, then drops the connection (``answer``
    False) or never answers (True: it keeps the connection open, silent)."""
    seen: list[bytes] = []
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if answer:
            held.append(writer)
        else:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_prompt_whose_connection_drops_after_sending_is_not_sent_again(
    make_client: MakeClient,
) -> None:
    async with _reading_server(answer=False) as (url, seen):
        session = PlatformSession(make_client(platform_url=url), "t")

        with pytest.raises(PlatformUnavailable, match="send prompt: cannot reach the platform"):
            await session.send_prompt("0" * 24, RECORD)
        assert (session.calls.value, len(seen)) == (1, 1)

        # A poll is safe to repeat: it is tried again (and aiohttp resends a GET on a
        # dropped connection once more itself).
        with pytest.raises(PlatformUnavailable, match=r"poll: cannot reach.*3 attempts"):
            await session.poll("0" * 24, "1" * 24)
        assert session.calls.value == 4
        assert [request.split(b" ")[0] for request in seen[1:]] == [b"GET"] * (len(seen) - 1)


async def test_a_prompt_without_an_answer_in_time_is_not_sent_again(
    make_client: MakeClient,
) -> None:
    async with _reading_server(answer=True) as (url, seen):
        session = PlatformSession(make_client(platform_url=url, request_timeout_s=0.3), "t")

        with pytest.raises(
            PlatformUnavailable, match=r"send prompt: .* did not answer within 0.3s"
        ):
            await session.send_prompt("0" * 24, RECORD)

    assert (session.calls.value, len(seen)) == (1, 1)
    assert seen[0].startswith(b"POST /magicplatform/v1/genai/conversation/addmessage/stream ")
    assert b"Authorization: Bearer t\r\n" in seen[0]


async def test_a_proxy_named_in_the_environment_carries_the_calls(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []
    answer = json.dumps({"status": "IN_PROGRESS"}).encode()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        session = PlatformSession(make_client(platform_url="http://platform.invalid:8080"), "t")
        assert (await session.poll("c", "m")).status is AnswerStatus.IN_PROGRESS
        assert seen[0].startswith(
            b"GET http://platform.invalid:8080/magicplatform/v1/genai/conversation/response/c/m "
        )

        # NO_PROXY spares the host: the call goes straight there (and finds nothing).
        monkeypatch.setenv("NO_PROXY", "platform.invalid")
        spared = PlatformSession(make_client(platform_url="http://platform.invalid:8080"), "t")
        with pytest.raises(PlatformUnavailable, match="cannot reach the platform"):
            await spared.poll("c", "m")
        assert len(seen) == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_a_user_name_basic_authentication_cannot_carry_is_refused_before_any_call(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client()

    with pytest.raises(AuthFailed, match="contains ':'"):
        await client.authenticate(Credentials(CREDENTIALS.tenant, "a:b", PASSWORD))

    assert (await sim.stats())["calls"]["auth"] == 0


async def test_an_expiring_token_is_refreshed_before_use(sim: Sim, make_client: MakeClient) -> None:
    await sim.configure(token_ttl_s=1)
    client = make_client(token_margin_s=30)
    first = await client.authenticate(CREDENTIALS)

    # A margin longer than the token's life still leaves it usable for half of it.
    assert first is await client.authenticate(CREDENTIALS)
    renewed = await assert_eventually(
        lambda: client.authenticate(CREDENTIALS),
        lambda token: token is not first,
        timeout=3,
        what="token refresh",
    )
    await PlatformSession(client, renewed.value).create_conversation(ASSET)

    assert renewed.value != first.value
    stats = await sim.stats()
    assert stats["calls"]["auth"] == 2
    assert stats["rejected"]["401"] == 0


async def test_a_rejected_token_is_reported_and_a_refresh_replaces_it(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client()
    rejected = await client.authenticate(CREDENTIALS)
    await sim.reset()  # the platform forgets every token it issued

    with pytest.raises(TokenRejected, match=r"create conversation: .* \(401\)"):
        await PlatformSession(client, rejected.value).create_conversation(ASSET)
    cached = await client.authenticate(CREDENTIALS)
    renewed = await client.authenticate(CREDENTIALS, refresh=True)
    conv_id = await PlatformSession(client, renewed.value).create_conversation(ASSET)

    assert cached is rejected  # the cache cannot tell; only a refresh goes to the platform
    assert renewed.value != rejected.value
    assert len(conv_id) == 24
    stats = await sim.stats()
    assert stats["rejected"]["401"] == 1
    assert stats["calls"]["auth"] == 1  # counted since the reset: the refresh only
    assert stats["calls"]["create"] == 2


async def test_a_wrong_password_fails_without_revealing_it(
    sim: Sim, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = Credentials("acme", "alice@example.com", "wrong-secret-pw")
    client = make_client()

    with pytest.raises(AuthFailed) as failed:
        await client.authenticate(wrong)

    assert "alice@example.com" in str(failed.value)
    for text in (str(failed.value), repr(failed.value), repr(wrong), caplog.text):
        assert "wrong-secret-pw" not in text
    assert (await sim.stats())["calls"]["auth"] == 1


async def test_tokens_are_cached_per_password_and_never_shown(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client()

    tokens = await asyncio.gather(*(client.authenticate(CREDENTIALS) for _ in range(5)))
    with pytest.raises(AuthFailed):
        await client.authenticate(Credentials("acme", "alice@example.com", "not-it"))

    assert len({id(token) for token in tokens}) == 1
    assert tokens[0].value not in repr(tokens[0])
    assert PASSWORD not in repr(CREDENTIALS)
    assert (await sim.stats())["calls"]["auth"] == 2


async def test_the_chains_opening_calls_hand_a_429_back_at_once_with_its_retry_after(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client(max_retries=4, chain_retries=1)
    token = (await client.authenticate(CREDENTIALS)).value
    session = PlatformSession(client, token, Retries(transient=1, throttled=0))
    await sim.configure(throttle_rate=1.0, retry_after_s=7)

    with pytest.raises(Throttled) as throttled:
        await session.create_conversation(ASSET)

    assert throttled.value.retry_after == 7
    assert "attempts" not in str(throttled.value)  # tried once
    assert (await sim.stats())["calls"]["create"] == 1


async def test_the_chains_opening_calls_retry_a_5xx_only_chain_retries_times(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client(max_retries=4, chain_retries=1)
    token = (await client.authenticate(CREDENTIALS)).value
    session = PlatformSession(
        client, token, Retries.chain(WorkerSettings(chain_retries=1, tls_mode="plaintext"))
    )
    await sim.configure(error_next=10)

    with pytest.raises(PlatformUnavailable, match="gave up after 2 attempts"):
        await session.create_conversation(ASSET)


async def test_polls_keep_the_default_retries_inside_a_chain(
    sim: Sim, make_client: MakeClient
) -> None:
    client = make_client(max_retries=2, chain_retries=0)
    token = (await client.authenticate(CREDENTIALS)).value
    session = PlatformSession(client, token, Retries(transient=0, throttled=0))
    conv_id = await session.create_conversation(ASSET)
    message_id = await session.send_prompt(conv_id, RECORD)
    await sim.configure(throttle_next=2, retry_after_s=0.01)

    answer = await session.poll(conv_id, message_id)

    assert answer.status in (AnswerStatus.IN_PROGRESS, AnswerStatus.SUCCESS)
    assert (await sim.stats())["rejected"]["429"] == 2
