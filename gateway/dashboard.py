"""``/dashboard``: a web page of tasks, their live progress, traces, costs and files, and the
platform's totals for admins; plain HTML, CSS and JavaScript from ``gateway/static/dashboard/``,
no build step and nothing loaded from anywhere else.

**Signing in.** The page asks for an API key and keeps it in the tab's ``sessionStorage`` (gone
when the tab closes, never in a cookie, never in a URL). Every call the page makes is a
``fetch`` carrying ``Authorization: Bearer <key>``, like any other client's, so the dashboard
has no authority of its own: a client sees its own tasks, an admin everyone's, and the gateway
answers 401/403/404 as it does to anyone.

**The live stream.** ``EventSource`` cannot send a header, and a key in a query string would
land in logs, history and ``Referer`` headers. The page therefore reads the existing
``GET /task/{id}/events`` with ``fetch`` and a ``ReadableStream``, parsing the
``data: <json>`` lines itself, with the same ``Authorization`` header: no second kind of
credential exists, no token can leak through a URL, and the stream limits per caller and per
task (:mod:`gateway.streams`) apply unchanged. The page follows at most a few tasks at once and
refreshes the rest with the list, so it stays well within the per-caller limit.

**What protects the page.** Its responses carry a strict Content-Security-Policy (scripts,
styles and connections from this origin only, no inline script or style, no plugins, no
framing) and ``X-Frame-Options: DENY``; the scripts build every element with
``textContent``/``createElement``, never ``innerHTML``, since task data is untrusted input.
Every API response of the gateway carries ``Cache-Control: no-store`` (:class:`NoStore`), so a
browser keeps no task, file or key listing on disk; the pages and their scripts are revalidated
on every load (``no-cache``), which serves a new version at once.

**Downloads** carry the key too: the page fetches ``/files/{id}`` and saves the bytes as a
blob, so no key or signed URL appears in the page.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Path
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from common import task_ids

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static" / "dashboard"
PREFIX = "/dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _with_headers(send: Send, headers: dict[str, str], *, replace: bool) -> Send:
    """``send`` with ``headers`` added to the response's start (``replace``: over the same
    headers the app set; otherwise only where the app set none)."""
    encoded = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            kept = [
                (name, value)
                for name, value in message.get("headers", [])
                if not (replace and name.lower() in {n for n, _ in encoded})
            ]
            added = [(n, v) for n, v in encoded if replace or n not in present]
            message["headers"] = kept + added
        await send(message)

    return sending


class NoStore:
    """Gives every response that sets no ``Cache-Control`` of its own ``no-store``: the
    gateway's answers are one caller's data, which no browser or shared cache should keep."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(
            scope, receive, _with_headers(send, {"Cache-Control": "no-store"}, replace=False)
        )


class _Hardened:
    """The dashboard's static files with the page headers (CSP, framing, revalidation)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, _with_headers(send, PAGE_HEADERS, replace=True))


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=PAGE_HEADERS)


def install(app: FastAPI) -> None:
    """Serves the dashboard: ``/dashboard`` (the task list and totals),
    ``/dashboard/tasks/{task_id}`` (one task) and their scripts and styles under
    ``/dashboard/static/``. The pages need no key; everything they show does."""

    @app.get(PREFIX, include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return _page("index.html")

    @app.get(PREFIX + "/tasks/{task_id}", include_in_schema=False)
    async def dashboard_task_page(
        task_id: str = Path(pattern=task_ids.PATTERN),
    ) -> FileResponse:
        return _page("task.html")

    static = StaticFiles(directory=STATIC_DIR, check_dir=True)
    app.mount(PREFIX + "/static", _Hardened(static), name="dashboard-static")
