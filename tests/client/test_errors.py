"""The client's exception tree against real HTTP answers (a scripted server on loopback), on
the sync and the async client alike: every REST error code and status, answers that are not
the gateway's, no answer at all, and the key kept out of URLs and messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from tests.client.conftest import KEY, TASK_ID, Scripted, answer, status_body
from tests.helpers import free_port
from wealthai_client import (
    AsyncClient,
    BadInput,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    WealthAIError,
)
from wealthai_client.config import Config
from wealthai_client.errors import error_class, retry_after

STATUS = f"/task/{TASK_ID}/status"


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [
        (422, "invalid_input", BadInput),
        (413, "too_large", BadInput),
        (416, "range_not_satisfiable", BadInput),
        (405, "method_not_allowed", BadInput),  # another 4xx: the request cannot succeed
        (401, "unauthenticated", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "conflict", Conflict),
        (409, "wrong_state", Conflict),
        (429, "rate_limited", RateLimited),
        (500, "internal", ServerError),
        (502, "upstream_error", ServerError),
        (503, "unavailable", ServerError),
        (504, "timeout", ServerError),
    ],
)
def test_each_rest_error_raises_its_exception_with_what_the_gateway_said(
    scripted: Scripted, call: Any, status: int, code: str, raised: type[WealthAIError]
) -> None:
    scripted.reply("GET", STATUS, status, {"error": code, "detail": f"because {code}"})
    with pytest.raises(raised) as caught:
        call("status", TASK_ID)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.detail == f"because {code}"
    assert type(caught.value) is raised


def test_invalid_input_keeps_each_field_and_reason(scripted: Scripted, call: Any) -> None:
    errors = [{"field": "body.data", "reason": "Field required"}]
    body = {"error": "invalid_input", "detail": "body.data: Field required", "errors": errors}
    scripted.reply("POST", "/task/submit", 422, body)
    with pytest.raises(BadInput) as caught:
        call("submit", {"data": [{"top_movers_data": "x"}]})
    assert caught.value.errors == errors


def test_rate_limited_exposes_retry_after(scripted: Scripted, call: Any) -> None:
    scripted.reply(
        "GET", STATUS, 429, {"error": "rate_limited", "detail": "slow"}, {"Retry-After": "7"}
    )
    with pytest.raises(RateLimited) as caught:
        call("status", TASK_ID)
    assert caught.value.retry_after_s == 7


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0.5", 0.5), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None), (None, None)],
)
def test_retry_after_takes_seconds_only(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


def test_the_code_decides_before_the_status_but_never_over_a_5xx() -> None:
    assert error_class(400, "not_found") is NotFound
    assert error_class(404, "some_new_code") is NotFound
    assert error_class(418, "") is BadInput
    assert error_class(503, "invalid_input") is ServerError


def test_an_answer_not_in_the_gateways_shape_is_named_by_its_status(
    scripted: Scripted, call: Any
) -> None:
    scripted.reply("GET", STATUS, 502, raw=b"<html>bad gateway</html>")
    with pytest.raises(ServerError) as caught:
        call("status", TASK_ID)
    assert caught.value.detail == "HTTP 502 Bad Gateway: <html>bad gateway</html>"
    scripted.reply("GET", STATUS, 404, raw=b"")
    with pytest.raises(NotFound) as missing:
        call("status", TASK_ID)
    assert missing.value.detail == "HTTP 404 Not Found"


def test_a_success_that_is_not_the_model_is_a_server_error(scripted: Scripted, call: Any) -> None:
    scripted.reply("GET", STATUS, 200, {"task_id": TASK_ID})
    with pytest.raises(ServerError, match="not a StatusResponse"):
        call("status", TASK_ID)


def test_connection_refused_is_unreachable() -> None:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        Client(config=Config(refused, KEY)) as api,
        pytest.raises(Unreachable, match="cannot reach"),
    ):
        api.status(TASK_ID)

    async def async_refused() -> None:
        async with AsyncClient(config=Config(refused, KEY)) as api:
            await api.status(TASK_ID)

    with pytest.raises(Unreachable, match="cannot reach") as caught:
        asyncio.run(async_refused())
    assert KEY not in str(caught.value)


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    with (
        Client(config=Config("http://no-such-host.invalid", KEY)) as api,
        pytest.raises(Unreachable),
    ):
        api.status(TASK_ID)

    async def resolve() -> None:
        async with AsyncClient(config=Config("http://no-such-host.invalid", KEY)) as api:
            await api.status(TASK_ID)

    with pytest.raises(Unreachable):
        asyncio.run(resolve())


def test_no_answer_in_time_is_unreachable(scripted: Scripted, call: Any) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response(status_body())

    scripted.on("GET", STATUS, slow)
    with pytest.raises(Unreachable, match="did not answer in time"):
        call("status", TASK_ID)  # the call fixture's clients time out after 2 s


def test_a_connection_dropped_mid_answer_is_unreachable(scripted: Scripted, call: Any) -> None:
    async def dropped(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"task_id": ')
        assert request.transport is not None
        request.transport.close()
        return response

    scripted.on("GET", STATUS, dropped)
    with pytest.raises(Unreachable):
        call("status", TASK_ID)


def test_the_key_goes_in_the_authorization_header_only(scripted: Scripted, call: Any) -> None:
    scripted.reply("GET", STATUS, 200, status_body())
    call("status", TASK_ID)
    (seen,) = scripted.requests("GET", STATUS)
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in seen.url


def test_without_a_key_no_authorization_header_is_sent(scripted: Scripted) -> None:
    scripted.reply("GET", STATUS, 200, status_body())
    with Client(config=Config(scripted.url)) as api:
        api.status(TASK_ID)
    assert "Authorization" not in scripted.requests("GET", STATUS)[0].headers
    assert "api_key" not in repr(Config(scripted.url, KEY)) and KEY not in repr(
        Config(scripted.url, KEY)
    )


def test_malformed_input_is_refused_before_any_call(scripted: Scripted, call: Any) -> None:
    with pytest.raises(BadInput, match="task id"):
        call("status", "../admin/keys")
    with pytest.raises(BadInput, match="file id"):
        call("download", "f_nope", ".")
    with pytest.raises(BadInput, match="key id"):
        call("revoke_key", "XYZ")
    with pytest.raises(BadInput) as caught:
        call("submit", {"username": "ann", "data": [{"top_movers_data": "x"}]})
    assert caught.value.code == "invalid_input"
    assert "send both" in caught.value.errors[0]["reason"]
    with pytest.raises(BadInput, match=r"body\.role"):
        call("create_key", "ann", "acme", "owner")
    with pytest.raises(BadInput, match="limit"):
        call("tasks", limit=0)
    with pytest.raises(BadInput, match="limit"):
        call("files", limit=5000)
    assert scripted.seen == []


def test_a_submitted_password_reaches_the_gateway_unmasked(scripted: Scripted, call: Any) -> None:
    accepted = {
        "task_id": TASK_ID,
        "status": "pending",
        "message": "Task submitted successfully",
        "created_at": "2026-12-01T12:00:00",
    }
    scripted.on("POST", "/task/submit", answer(202, accepted))
    task = {"username": "u@example.com", "password": "pw-1", "data": [{"top_movers_data": "x"}]}
    submitted = call("submit", task, idempotency_key="k-1")
    assert submitted.task_id == TASK_ID
    (seen,) = scripted.requests("POST", "/task/submit")
    assert b'"password":"pw-1"' in seen.body.replace(b" ", b"")
    assert seen.headers["Idempotency-Key"] == "k-1"
