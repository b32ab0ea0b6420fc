"""What the command line draws on a terminal (how far a section got, its few words, task data
shown as text and never as markup) and how the async transport names aiohttp's failures."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import pytest

from common.http_transport import httpx_error
from gateway.models import SectionStateOut
from tests.client.conftest import KEY, TASK_ID, Scripted, status_body
from wealthai_client.cli import run
from wealthai_client.display import fraction, section_note


def section(status: str = "running", progress: str = "", **extra: Any) -> SectionStateOut:
    return SectionStateOut(
        name="s",
        status=status,
        cost=extra.get("cost", 0.0),
        error=extra.get("error", ""),
        progress=progress,
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (section("completed"), 1.0),
        (section("error", "chunks 3/10"), 1.0),
        (section("running", "chunks 3/10"), 0.3),
        (section("running", "chunks 12/10"), 1.0),
        (section("running", "chunks 0/0"), None),
        (section("running", "profiled 40%"), 0.4),
        (section("running", ""), None),
        (section("pending", ""), 0.0),
    ],
)
def test_how_far_a_section_got(state: SectionStateOut, expected: float | None) -> None:
    assert fraction(state) == (pytest.approx(expected) if expected is not None else None)


def test_a_sections_few_words() -> None:
    assert section_note(section("running", "chunks 3/10")) == "running chunks 3/10"
    assert section_note(section("completed", "chunks 10/10", cost=0.25)) == "completed $0.2500"
    assert section_note(section("error", error="every asset failed")) == (
        "error every asset failed"
    )


def test_on_a_terminal_task_data_is_text_not_markup(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = status_body("error", 100, message="[bold red]boom[/]")
    body["sections"][0].update(status="error", error="[link=http://evil.example]x[/link]")
    scripted.reply("GET", f"/task/{TASK_ID}/status", 200, body)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as for a terminal
    monkeypatch.setenv("WEALTHAI_URL", scripted.url)
    monkeypatch.setenv("WEALTHAI_API_KEY", KEY)
    assert run(["status", TASK_ID]) == 1
    out = capsys.readouterr().out
    assert "\x1b[" in out  # styled: the terminal branch
    assert "[bold red]boom[/]" in out
    assert "[link=http://evil.example]x[/link]" in out


def request() -> httpx.Request:
    return httpx.Request("GET", "http://127.0.0.1:1/")


@pytest.mark.parametrize(
    ("raised", "named"),
    [
        (aiohttp.ConnectionTimeoutError("slow connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("slow read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut"), httpx.ReadError),
    ],
)
def test_aiohttps_failures_become_httpxs(raised: BaseException, named: type) -> None:
    assert type(httpx_error(raised, request())) is named


def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    # How httpx-aiohttp hands it over: a ConnectTimeout caused by the refusal.
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "refused"),
    )
    handed = httpx.ConnectTimeout("refused")
    handed.__cause__ = refused
    assert type(httpx_error(handed, request())) is httpx.ConnectError
    other = ValueError("not a transport failure")
    assert httpx_error(other, request()) is other
