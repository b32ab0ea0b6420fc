"""A scripted HTTP server on loopback standing in for the gateway: each test says what every
route answers (a status, a body, headers, or a handler of its own), and reads back what the
client sent. It runs on its own thread and event loop, so the sync client can call it too."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.helpers import free_port
from wealthai_client import AsyncClient, Client
from wealthai_client.config import Config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TASK_ID = "task_20261201120000_0123abcd"
FILE_ID = "f_9f86d081884c7d659a2feaa0c55ad015_0123456789abcdef01234567"
KEY = "wak_0123456789ab_" + "k" * 43


@dataclass
class Seen:
    """A request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    url: str


@dataclass
class Scripted:
    """What each route answers, and every request received."""

    url: str = ""
    routes: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *handlers: Handler) -> None:
        """Answers ``method path`` with each handler in turn, the last one from then on."""
        self.routes[(method, path)] = list(handlers)

    def reply(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.on(method, path, answer(status, body, headers, raw))

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.headers.copy(),
                body,
                str(request.url),
            )
        )
        handlers = self.routes.get((request.method, request.path))
        if not handlers:
            return web.json_response({"error": "not_found", "detail": "no such route"}, status=404)
        handler = handlers.pop(0) if len(handlers) > 1 else handlers[0]
        return await handler(request)


def answer(
    status: int = 200,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        if raw is not None:
            return web.Response(status=status, body=raw, headers=headers)
        if body is None and status == 204:
            return web.Response(status=204, headers=headers)
        return web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    return handler


def status_body(status: str = "processing", progress: int = 50, **extra: Any) -> dict[str, Any]:
    """A StatusResponse as the gateway answers it."""
    return {
        "task_id": TASK_ID,
        "status": status,
        "progress": progress,
        "message": f"{status} now",
        "sections": [
            {"name": "top_movers", "status": "running", "cost": 0.0, "error": "", "progress": ""}
        ],
        "trace": [],
        "created_at": "2026-12-01T12:00:00",
        "updated_at": f"2026-12-01T12:00:{progress:02d}",
        "completed_at": None,
        **extra,
    }


def event_line(status: str = "processing", progress: int = 50) -> bytes:
    event = {
        "task_id": TASK_ID,
        "status": status,
        "progress": progress,
        "message": "",
        "section": "",
        "at": "2026-12-01T12:00:00Z",
    }
    return f"data: {json.dumps(event)}\n\n".encode()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    script = Scripted()
    port = free_port()
    script.url = f"http://127.0.0.1:{port}"
    started = threading.Event()
    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", script._dispatch)
    runner = web.AppRunner(app, shutdown_timeout=0.5)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.close()

    async def shutdown() -> None:
        await runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # handlers still sleeping
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "the scripted server did not start"
    yield script
    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def client(scripted: Scripted) -> Iterator[Client]:
    with Client(config=Config(scripted.url, KEY), timeout=5, poll_interval=0.05) as api:
        yield api


@pytest.fixture
async def aclient(scripted: Scripted) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(config=Config(scripted.url, KEY), timeout=5, poll_interval=0.05) as api:
        yield api


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, scripted: Scripted) -> Iterator[Callable[..., Any]]:
    """Runs one client method by name, on the sync or the async client: ``call("status", id)``."""
    config = Config(scripted.url, KEY)
    if request.param == "sync":
        with Client(config=config, timeout=2, poll_interval=0.05) as api:

            def run_sync(method: str, /, *a: Any, **kw: Any) -> Any:
                result = getattr(api, method)(*a, **kw)
                return list(result) if isinstance(result, Iterator) else result

            yield run_sync
        return

    loop = asyncio.new_event_loop()
    api_async = AsyncClient(config=config, timeout=2, poll_interval=0.05)

    def run(method: str, /, *a: Any, **kw: Any) -> Any:
        result = getattr(api_async, method)(*a, **kw)
        if hasattr(result, "__anext__"):

            async def drain() -> list[Any]:
                return [item async for item in result]

            return loop.run_until_complete(drain())
        return loop.run_until_complete(result)

    yield run
    loop.run_until_complete(api_async.aclose())
    loop.close()
