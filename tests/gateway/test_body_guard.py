"""gateway.app.BodyGuard, every branch: the size limit (declared, streamed, exempt routes) and
the bound on a stalled body (a piece late, a slow body that keeps coming, the wait after the
body, which is not bounded). The 408 of a stalled upload through the whole app, its multipart
upload aborted, is in test_files_api."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import HTTPException

from gateway.app import BodyGuard

IDLE = 0.2
Message = dict[str, Any]


def scope(path: str = "/task/submit", length: int | None = None) -> dict[str, Any]:
    headers = [(b"host", b"gw")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def pieces(*parts: bytes | tuple[float, bytes]) -> Any:
    """A receive giving the body in ``parts``, each bytes at once or ``(pause_s, bytes)`` after
    a pause (the last part ends the body); past the body the client leaves after 2 * IDLE."""
    queue = [part if isinstance(part, tuple) else (0.0, part) for part in parts]

    async def receive() -> Message:
        if not queue:
            await asyncio.sleep(2 * IDLE)
            return {"type": "http.disconnect"}
        pause, body = queue.pop(0)
        await asyncio.sleep(pause)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    return receive


class App:
    """Reads the whole body, then waits once more for the client, as a streamed answer does."""

    def __init__(self) -> None:
        self.body = b""
        self.after: Message | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.after = await receive()


def guard(app: App, max_bytes: int = 100, exempt: frozenset[tuple[str, str]] = frozenset()):
    return BodyGuard(app, max_bytes=max_bytes, idle_s=IDLE, exempt=exempt)


async def no_send(message: Message) -> None:
    raise AssertionError(f"nothing is answered here: {message}")


async def test_a_slow_body_that_keeps_coming_is_read_whole() -> None:
    app = App()
    parts = [b"a", (0.1, b"b"), (0.1, b"c"), (0.1, b"d")]  # 0.3 s in all, more than the bound
    await guard(app)(scope(), pieces(*parts), no_send)
    assert app.body == b"abcd"


async def test_the_wait_after_the_body_is_not_bounded() -> None:
    app = App()
    await guard(app)(scope(), pieces(b"whole"), no_send)
    assert app.after == {"type": "http.disconnect"}  # came after 2 * IDLE


@pytest.mark.parametrize("path", ["/task/submit", "/files"])
async def test_a_body_that_stalls_is_408_on_every_route(path: str) -> None:
    app = App()
    guarded = guard(app, exempt=frozenset({("POST", "/files")}))
    with pytest.raises(HTTPException) as raised:
        await guarded(scope(path), pieces(b"a", (3 * IDLE, b"b")), no_send)
    assert raised.value.status_code == 408
    assert raised.value.detail == f"request body stalled: nothing of it came for {IDLE:g} s"
    assert app.body == b"a"


async def test_a_declared_length_over_the_limit_is_413_before_the_app_runs() -> None:
    app, sent = App(), []

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(app, max_bytes=10)(scope(length=11), pieces(b"x" * 11), send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "too_large"
    assert app.body == b"" and app.after is None


async def test_a_streamed_body_passing_the_limit_is_413() -> None:
    app = App()
    with pytest.raises(HTTPException) as raised:
        await guard(app, max_bytes=10)(scope(), pieces(b"x" * 6, b"x" * 6), no_send)
    assert raised.value.status_code == 413
    assert app.body == b"x" * 6


async def test_an_exempt_route_is_held_to_no_size_here() -> None:
    app = App()
    exempt = frozenset({("POST", "/files")})
    await guard(app, max_bytes=10, exempt=exempt)(
        scope("/files", length=24), pieces(b"x" * 12, b"x" * 12), no_send
    )
    assert app.body == b"x" * 24


async def test_other_scopes_pass_untouched() -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    await BodyGuard(app, max_bytes=1, idle_s=IDLE)({"type": "lifespan"}, receive, no_send)
    assert seen == [("lifespan", receive)]
