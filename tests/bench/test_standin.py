"""The platform stand-in: its routes over a real server on a loopback port, and latencies that
depend on the prompt alone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import signal
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from bench.chaos import SEED
from bench.clients import Outcome
from bench.figures import section_figures
from bench.standin import (
    GENAI,
    MAX_BODY,
    Knobs,
    StandIn,
    StandInError,
    bound_port,
    cpu_per_request,
    latency_for,
    route,
    start,
    until_stopped,
)
from simulator.answers import answer_for, input_digest

ASSET = "c7b75809-063a-4f9c-80a8-496e88ed4894"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    standin: StandIn
    clock: Clock
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, token: str | None = None, body: object = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None if body is None else json.dumps(body).encode()
        async with self.http.request(method, path, headers=headers, data=data) as reply:
            return reply.status, json.loads(await reply.read())

    async def token(self) -> str:
        login = base64.b64encode(b"ann@example.com:secret").decode()
        headers = {"Authorization": f"Basic {login}"}
        async with self.http.get("/accesstoken/wealth", headers=headers) as reply:
            assert reply.status == 200
            answer = await reply.json()
        assert answer["token_type"] == "Bearer" and answer["expires_in"] > 0
        return str(answer["access_token"])

    async def prompt(self, token: str, message: str) -> tuple[str, str]:
        status, created = await self.call(
            "POST", f"{GENAI}/create", token=token, body={"asset_version_id": ASSET}
        )
        assert status == 200
        conv_id = created["conversation_id"]
        status, sent = await self.call(
            "POST",
            f"{GENAI}/addmessage/stream",
            token=token,
            body={"conversation_id": conv_id, "message": message},
        )
        assert status == 200
        return conv_id, sent["message_id"]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = Clock()
    standin = StandIn(seed=7, clock=clock)
    runner = await start(standin, 0)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{bound_port(runner)}") as http:
        yield Served(standin, clock, http)
    await runner.cleanup()


async def test_a_prompt_is_answered_once_its_latency_has_passed(served: Served) -> None:
    status, _ = await served.call("PATCH", "/_sim/config", body={"latency_median_s": 4})
    assert status == 200
    token = await served.token()
    message = json.dumps({"top_movers_data": "AAPL +3.2%"})
    conv_id, message_id = await served.prompt(token, message)
    assert len(conv_id) == len(message_id) == 24 and conv_id != message_id
    poll = f"{GENAI}/response/{conv_id}/{message_id}"
    wait = latency_for(input_digest(ASSET, message), 7, Knobs(latency_median_s=4))

    served.clock.now += wait - 0.001
    assert await served.call("GET", poll, token=token) == (
        200,
        {"status": "IN_PROGRESS", "response": "", "cost": 0.0},
    )
    served.clock.now += 0.002
    response, cost = answer_for(ASSET, message, 0.004, 0.24)
    expected = {"status": "SUCCESS", "response": response, "cost": cost}
    assert await served.call("GET", poll, token=token) == (200, expected)
    assert await served.call("GET", poll, token=token) == (200, expected)

    _, stats = await served.call("GET", "/_sim/stats")
    assert stats["calls"] == {"auth": 1, "create": 1, "prompt": 1, "poll": 3}
    assert stats["answers"] == {"success": 1, "failed": 0}
    assert stats["served"] == 1 + 1 + 1 + 1 + 3 + 1  # the PATCH and this call included
    assert stats["cpu_s"] > 0

    _, timeline = await served.call("GET", "/_sim/timeline")
    entry = timeline[message_id]
    assert entry["input"] == input_digest(ASSET, message)
    assert entry["asset_id"] == ASSET
    assert (entry["status"], entry["polls"]) == ("SUCCESS", 3)
    ready = datetime.fromisoformat(entry["ready_at"]) - datetime.fromisoformat(entry["prompted_at"])
    assert math.isclose(ready.total_seconds(), wait, abs_tol=1e-5)
    assert entry["created_at"] <= entry["prompted_at"] <= entry["ready_at"] <= entry["answered_at"]


async def test_the_benchmark_reads_its_timeline_like_the_simulators(served: Served) -> None:
    """The benchmark's figures come out of the stand-in's timeline unchanged."""
    assets = {
        "portfolio_snapshot": ASSET,
        "top_movers": "a9fdeb96-cdfa-4a48-9467-bf97a06f8738",
        "model_and_rebalancing": "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
    }
    await served.call("PATCH", "/_sim/config", body={"latency_median_s": 1, "latency_sigma": 0})
    token = await served.token()
    sent = []
    for record, asset in zip(SEED, assets.values(), strict=True):
        _, created = await served.call(
            "POST", f"{GENAI}/create", token=token, body={"asset_version_id": asset}
        )
        conv_id = created["conversation_id"]
        body = {"conversation_id": conv_id, "message": json.dumps(record)}
        _, answer = await served.call("POST", f"{GENAI}/addmessage/stream", token=token, body=body)
        sent.append((conv_id, answer["message_id"]))
    served.clock.now += 1.5
    for conv_id, message_id in sent:
        await served.call("GET", f"{GENAI}/response/{conv_id}/{message_id}", token=token)
    _, timeline = await served.call("GET", "/_sim/timeline")

    task = Outcome(0, list(SEED), task_id="t", status="completed", elapsed_s=2.0)
    figures = section_figures([task], timeline)
    assert (figures["sections"]["matched"], figures["sections"]["unmatched"]) == (3, 0)
    assert figures["polling"]["polls_per_section"] == 1
    assert figures["sections"]["polling_added_s"]["p50"] == 0.5
    assert figures["overhead_ms"]["total"]["p50"] == 1000.0


async def test_genai_calls_need_a_token_it_issued(served: Served) -> None:
    create = f"{GENAI}/create"
    assert (await served.call("POST", create, body={"asset_version_id": ASSET}))[0] == 401
    assert (await served.call("POST", create, token="forged", body={"asset_version_id": ASSET}))[
        0
    ] == 401
    async with served.http.get("/accesstoken/wealth") as reply:  # no login at all
        assert reply.status == 401
    garbled = {"Authorization": "Basic !!!"}
    async with served.http.get("/accesstoken/wealth", headers=garbled) as reply:
        assert reply.status == 401
    _, stats = await served.call("GET", "/_sim/stats")
    assert stats["rejected"]["401"] == 4


async def test_unknown_things_and_bad_bodies_are_refused(served: Served) -> None:
    token = await served.token()
    conv_id, message_id = await served.prompt(token, "hello")
    unknown = f"{GENAI}/response/{conv_id}/{'0' * 24}"
    assert (await served.call("GET", unknown, token=token))[0] == 404
    wrong_conv = f"{GENAI}/response/{'0' * 24}/{message_id}"
    assert (await served.call("GET", wrong_conv, token=token))[0] == 404
    body = {"conversation_id": "0" * 24, "message": "x"}
    assert (await served.call("POST", f"{GENAI}/addmessage/stream", token=token, body=body))[
        0
    ] == 404
    for bad in ({}, {"asset_version_id": ""}, {"asset_version_id": 3}):
        assert (await served.call("POST", f"{GENAI}/create", token=token, body=bad))[0] == 422
    for bad_body in ([], {"conversation_id": conv_id}, {"conversation_id": conv_id, "message": 1}):
        path = f"{GENAI}/addmessage/stream"
        assert (await served.call("POST", path, token=token, body=bad_body))[0] == 422
    async with served.http.post(f"{GENAI}/create", data=b"{not json") as reply:
        assert reply.status == 422
    assert (await served.call("GET", "/nowhere"))[0] == 404
    status, answer = await served.call("PATCH", "/_sim/config", body={"latency_sigma": 9})
    assert status == 422 and "latency_sigma" in answer["detail"]


async def test_reset_forgets_calls_and_state_but_keeps_the_knobs(served: Served) -> None:
    await served.call("PATCH", "/_sim/config", body={"latency_median_s": 3})
    token = await served.token()
    conv_id, message_id = await served.prompt(token, "hello")
    status, stats = await served.call("POST", "/_sim/reset")
    assert status == 200
    assert stats["calls"] == {"auth": 0, "create": 0, "prompt": 0, "poll": 0}
    assert stats["live"] == {"conversations": 0, "messages": 0}
    assert (await served.call("GET", "/_sim/timeline"))[1] == {}
    poll = f"{GENAI}/response/{conv_id}/{message_id}"
    assert (await served.call("GET", poll, token=token))[0] == 401  # its token is gone too
    assert (await served.call("GET", "/_sim/config"))[1]["latency_median_s"] == 3
    assert (await served.call("GET", "/_sim/health")) == (200, {"status": "ok"})


def test_latencies_depend_on_the_prompt_and_the_seed_only() -> None:
    knobs = Knobs(latency_median_s=5, latency_sigma=0.5)
    digests = [input_digest(ASSET, f"record {n}") for n in range(4000)]
    drawn = [latency_for(d, 1, knobs) for d in digests]
    assert drawn == [latency_for(d, 1, knobs) for d in digests]  # the same every time
    assert drawn != [latency_for(d, 2, knobs) for d in digests]  # another seed, others
    logs = [math.log(v) for v in drawn]
    # Log-normal around the median with the given sigma (4,000 draws: within a few percent).
    assert math.isclose(statistics.median(drawn), 5, rel_tol=0.05)
    assert math.isclose(statistics.stdev(logs), 0.5, rel_tol=0.05)
    assert max(drawn) <= knobs.latency_max_s


def test_latency_is_capped_and_exact_without_spread() -> None:
    digest = input_digest(ASSET, "x")
    assert latency_for(digest, 1, Knobs(latency_median_s=3, latency_sigma=0)) == 3
    assert latency_for(digest, 1, Knobs(latency_median_s=0, latency_sigma=1)) == 0
    capped = Knobs(latency_median_s=100, latency_sigma=0.1, latency_max_s=45)
    assert latency_for(digest, 1, capped) == 45


def test_knobs_accept_numbers_in_range_only() -> None:
    assert Knobs().patched({"latency_median_s": 20, "latency_sigma": 0.5}) == Knobs(20, 0.5, 45)
    for bad in (
        {"latency_median_s": -1},
        {"latency_sigma": 6},
        {"latency_max_s": 0},
        {"latency_median_s": "5"},
        {"latency_sigma": True},
        {"throttle_rate": 0.1},
    ):
        with pytest.raises(StandInError) as caught:
            Knobs().patched(bad)
        assert caught.value.status == 422


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", f"{GENAI}/response/abc/def", ("poll", ("abc", "def"))),
        ("POST", f"{GENAI}/addmessage/stream", ("prompt", ())),
        ("POST", f"{GENAI}/create", ("create", ())),
        ("GET", "/accesstoken/wealth", ("auth", ("wealth",))),
        ("GET", "/_sim/stats", ("stats", ())),
        ("PATCH", "/_sim/config", ("patch_config", ())),
        ("POST", "/_sim/reset", ("reset", ())),
    ],
)
def test_route_names_each_call(method: str, path: str, expected: tuple[str, Any]) -> None:
    assert route(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{GENAI}/response/abc"),
        ("GET", f"{GENAI}/response/abc/"),
        ("GET", f"{GENAI}/response/a/b/c"),
        ("POST", f"{GENAI}/response/abc/def"),
        ("GET", f"{GENAI}/create"),
        ("POST", f"{GENAI}/other"),
        ("GET", "/accesstoken/"),
        ("GET", "/accesstoken/a/b"),
        ("POST", "/accesstoken/wealth"),
        ("DELETE", "/_sim/stats"),
        ("GET", "/"),
    ],
)
def test_route_refuses_anything_else(method: str, path: str) -> None:
    with pytest.raises(StandInError) as caught:
        route(method, path)
    assert caught.value.status == 404


# -- HTTP/1.1 on raw connections -------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Raw:
    """A started stand-in reached over raw TCP connections."""

    standin: StandIn
    port: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def token(self) -> str:
        login = base64.b64encode(b"ann:pw").decode()
        reader, writer = await self.connect()
        writer.write(request("GET", "/accesstoken/wealth", f"Authorization: Basic {login}"))
        return str((await read_reply(reader)).json()["access_token"])


def request(
    method: str, path: str, *headers: str, body: bytes = b"", version: str = "1.1"
) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_reply(reader: asyncio.StreamReader, *, head_only: bool = False) -> Reply:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.removesuffix("\r\n\r\n").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    size = 0 if head_only or int(status) < 200 else int(headers["content-length"])
    return Reply(int(status), headers, await reader.readexactly(size))


async def assert_closed(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), 10) == b""


@pytest.fixture
async def raw() -> AsyncIterator[Raw]:
    standin = StandIn(seed=7)
    server = await start(standin, 0)
    raw = Raw(standin, bound_port(server))
    yield raw
    await raw.close()
    await server.cleanup()


async def test_one_connection_carries_many_requests(raw: Raw) -> None:
    token = await raw.token()
    reader, writer = await raw.connect()
    body = json.dumps({"asset_version_id": ASSET}).encode()
    # Header names in any case.
    writer.write(request("POST", f"{GENAI}/create", f"authorization: Bearer {token}", body=body))
    created = await read_reply(reader)
    assert created.status == 200
    assert created.headers["content-type"] == "application/json"
    assert "connection" not in created.headers  # HTTP/1.1: kept alive without saying so
    conv_id = created.json()["conversation_id"]
    body = json.dumps({"conversation_id": conv_id, "message": "hi"}).encode()
    writer.write(
        request("POST", f"{GENAI}/addmessage/stream", f"AUTHORIZATION: Bearer {token}", body=body)
    )
    message_id = (await read_reply(reader)).json()["message_id"]
    for _ in range(3):
        poll = f"{GENAI}/response/{conv_id}/{message_id}"
        writer.write(request("GET", poll, f"Authorization: Bearer {token}"))
        reply = await read_reply(reader)
        assert reply.status == 200 and reply.json()["status"] in ("IN_PROGRESS", "SUCCESS")
    writer.write(request("GET", "/_sim/stats"))
    stats = (await read_reply(reader)).json()
    assert stats["calls"] == {"auth": 1, "create": 1, "prompt": 1, "poll": 3}
    assert stats["served"] == 1 + 1 + 1 + 3 + 1


async def test_pipelined_requests_are_answered_in_order(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(
        request("GET", "/_sim/health")
        + request("GET", "/nowhere")
        + request("PATCH", "/_sim/config", body=b'{"latency_sigma": 0}')
        + request("GET", "/_sim/config")
    )
    writer.write_eof()  # and no more: the answers come, then the server closes
    replies = [await read_reply(reader) for _ in range(4)]
    assert [r.status for r in replies] == [200, 404, 200, 200]
    assert replies[0].json() == {"status": "ok"}
    assert replies[1].json() == {"detail": "no such call: GET /nowhere"}
    assert replies[2].json()["latency_sigma"] == replies[3].json()["latency_sigma"] == 0
    await assert_closed(reader)


async def test_answers_larger_than_the_socket_buffers_all_arrive_in_order(raw: Raw) -> None:
    """Megabytes of answers to a burst of pipelined requests, more than the socket buffers
    hold at once: the server waits for the client to take them, and every one arrives, in
    order."""
    token = raw.standin.issue_token("wealth", "ann", "pw")["access_token"]
    conv_id = raw.standin.create(token, ASSET)
    for n in range(60):
        raw.standin.prompt(token, conv_id, f"record {n}")
    count = 400
    reader, writer = await raw.connect()
    writer.write(request("GET", "/_sim/timeline") * count + request("GET", "/_sim/health"))
    writer.write_eof()
    replies = [await read_reply(reader) for _ in range(count + 1)]
    assert sum(len(r.body) for r in replies) > 4 << 20
    assert all(len(r.json()) == 60 for r in replies[:count])
    assert replies[count].json() == {"status": "ok"}
    await assert_closed(reader)


async def test_connection_close_is_honoured(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(
        request("GET", "/_sim/health", "Connection: close") + request("GET", "/_sim/health")
    )
    reply = await read_reply(reader)
    assert reply.status == 200 and reply.headers["connection"] == "close"
    await assert_closed(reader)  # the second request is not answered
    assert raw.standin.served == 1


async def test_http_1_0_closes_unless_asked_to_keep_alive(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(request("GET", "/_sim/health", version="1.0"))
    reply = await read_reply(reader)
    assert (reply.status, reply.headers["connection"]) == (200, "close")
    assert reply.json() == {"status": "ok"}
    await assert_closed(reader)

    reader, writer = await raw.connect()
    for _ in range(2):
        writer.write(request("GET", "/_sim/health", "Connection: keep-alive", version="1.0"))
        reply = await read_reply(reader)
        assert (reply.status, reply.headers["connection"]) == (200, "keep-alive")


async def test_a_malformed_request_is_answered_400_and_closed(raw: Raw) -> None:
    for garbage in (
        b"GARBAGE\r\n\r\n",
        b"GET /_sim/health HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await raw.connect()
        writer.write(request("GET", "/_sim/health") + garbage + request("GET", "/_sim/health"))
        assert (await read_reply(reader)).status == 200  # what came before is answered
        refused = await read_reply(reader)
        assert (refused.status, refused.headers["connection"]) == (400, "close")
        assert refused.json()["detail"].startswith("malformed request")
        await assert_closed(reader)


async def test_an_oversized_body_is_answered_413_and_closed(raw: Raw) -> None:
    # Announced too long: refused before the body is sent.
    reader, writer = await raw.connect()
    writer.write(f"POST {GENAI}/create HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    refused = await read_reply(reader)
    assert (refused.status, refused.headers["connection"]) == (413, "close")
    assert refused.json() == {"detail": f"the body is over {MAX_BODY} bytes"}
    await assert_closed(reader)

    # Chunked, and too long once its chunks add up; what the client still sends is dropped.
    reader, writer = await raw.connect()
    writer.write(f"POST {GENAI}/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk = 256 * 1024
    writer.write((b"%x\r\n" % chunk + b"x" * chunk + b"\r\n") * 5 + b"0\r\n\r\n")
    refused = await read_reply(reader)
    assert (refused.status, refused.headers["connection"]) == (413, "close")
    await assert_closed(reader)
    assert raw.standin.calls["create"] == 0


async def test_an_oversized_head_is_answered_431_and_closed(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(
        request("GET", "/_sim/health", *(f"X-Filler-{n}: {'y' * 1000}" for n in range(80)))
    )
    refused = await read_reply(reader)
    assert (refused.status, refused.headers["connection"]) == (431, "close")
    await assert_closed(reader)


async def test_a_request_split_across_writes_is_read_whole(raw: Raw) -> None:
    token = await raw.token()
    body = json.dumps({"asset_version_id": ASSET}).encode()
    whole = request("POST", f"{GENAI}/create", f"Authorization: Bearer {token}", body=body)
    # Cut inside the target, inside the Authorization header and inside the body.
    cuts = [20, whole.index(b"Bearer") + 9, len(whole) - len(body) + 7, len(whole)]
    reader, writer = await raw.connect()
    begin = 0
    for end in cuts:
        writer.write(whole[begin:end])
        await writer.drain()
        await asyncio.sleep(0.02)  # each piece in its own segment, most likely
        begin = end
    reply = await read_reply(reader)
    assert reply.status == 200 and len(reply.json()["conversation_id"]) == 24
    assert raw.standin.calls["create"] == 1


async def test_chunked_bodies_and_expect_continue_are_read(raw: Raw) -> None:
    token = await raw.token()
    body = json.dumps({"asset_version_id": ASSET}).encode()
    reader, writer = await raw.connect()
    writer.write(
        f"POST {GENAI}/create HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
        "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    interim = await read_reply(reader)
    assert interim.status == 100
    writer.write(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:]))
    reply = await read_reply(reader)
    assert reply.status == 200 and "conversation_id" in reply.json()


async def test_a_percent_encoded_path_is_decoded(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(request("GET", "/_sim/%68ealth?x=1"))
    assert (await read_reply(reader)).json() == {"status": "ok"}


async def test_a_head_request_gets_no_body(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(request("HEAD", "/_sim/health") + request("GET", "/_sim/health"))
    head = await read_reply(reader, head_only=True)
    assert head.status == 404 and int(head.headers["content-length"]) > 0
    assert (await read_reply(reader)).json() == {"status": "ok"}  # the next answer, intact


async def test_an_upgrade_is_answered_then_the_connection_closed(raw: Raw) -> None:
    reader, writer = await raw.connect()
    writer.write(
        request("GET", "/_sim/health", "Connection: Upgrade", "Upgrade: websocket") + b"\x81\x00"
    )
    reply = await read_reply(reader)
    assert (reply.status, reply.headers["connection"]) == (200, "close")
    await assert_closed(reader)


class Failing(StandIn):
    def stats(self) -> dict[str, Any]:
        raise RuntimeError("a fault of the stand-in itself")


async def test_a_fault_of_the_stand_in_is_answered_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = Failing()
    server = await start(failing, 0)
    raw = Raw(failing, bound_port(server))
    try:
        reader, writer = await raw.connect()
        writer.write(request("GET", "/_sim/stats") + request("GET", "/_sim/health"))
        failed = await read_reply(reader)
        assert (failed.status, failed.json()) == (500, {"detail": "internal error"})
        assert (await read_reply(reader)).status == 200  # the connection lives on
        assert "answering GET /_sim/stats failed" in caplog.text
    finally:
        await raw.close()
        await server.cleanup()


async def test_cleanup_closes_open_connections() -> None:
    standin = StandIn()
    server = await start(standin, 0)
    raw = Raw(standin, bound_port(server))
    try:
        reader, writer = await raw.connect()
        writer.write(request("GET", "/_sim/health"))
        assert (await read_reply(reader)).status == 200
        await server.cleanup()
        await assert_closed(reader)
        with pytest.raises(OSError):
            await raw.connect()
    finally:
        await raw.close()


async def test_until_stopped_stops_any_server_on_sigterm() -> None:
    class Runner:
        cleaned = False

        async def cleanup(self) -> None:
            self.cleaned = True

    runner = Runner()
    waiting = asyncio.create_task(until_stopped(runner))
    await asyncio.sleep(0)  # the signal handlers are in place
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(waiting, 10)
    assert runner.cleaned


async def test_its_cpu_per_request_is_measured_from_its_own_counters(raw: Raw) -> None:
    """The measurement's arithmetic, on a server in this process (so not the figure itself)."""
    per_request = await cpu_per_request(f"http://127.0.0.1:{raw.port}", 40, 4, 0.0)
    assert per_request > 0
    # Login, create, prompt, 40 warm-up polls, stats, 40 polls, stats.
    assert raw.standin.served == 3 + 40 + 1 + 40 + 1
    assert raw.standin.calls["poll"] == 80
