"""A light stand-in for the AI platform, for the benchmarks: the platform's calls (SPEC §3)
and the simulator's ``/_sim/*`` read-outs the benchmark uses, served from a small asyncio
protocol over ``httptools``, and little else.

``python -m bench.standin --port P [--seed S]`` serves:

=======  ==========================================================  ==========================
method   path                                                        answer
=======  ==========================================================  ==========================
GET      /accesstoken/{tenant}  (HTTP Basic, any non-empty login)    access_token, token_type,
                                                                     expires_in
POST     /magicplatform/v1/genai/conversation/create                 conversation_id
POST     /magicplatform/v1/genai/conversation/addmessage/stream      message_id
GET      /magicplatform/v1/genai/conversation/response/{conv}/{msg}  status, response, cost
GET      /_sim/health                                                {"status": "ok"}
GET      /_sim/stats                                                 calls, rejected, answers,
                                                                     ``served`` and ``cpu_s``
GET      /_sim/timeline                                              message id -> its prompt's
                                                                     life (as the simulator's)
GET      /_sim/config, PATCH /_sim/config                            the latency knobs
POST     /_sim/reset                                                 forgets calls and state
=======  ==========================================================  ==========================

What it leaves out, so that its CPU measures the callers and not itself: faults, throttling,
per-asset knobs, token expiry within a run and FastAPI's validation layers. Genai calls still
need a token it issued (401 otherwise) and name what they reach (404 for an unknown
conversation or message, 422 for a body that is not the contract's).

**Latency is a function of the prompt**, not of arrival order: ``median * exp(sigma * z)``, capped
at ``latency_max_s``, where ``z`` is the standard normal quantile of a uniform number read from
``sha256(seed:input digest)``. Two runs that send the same prompts (the platform and a peer,
driven with the same records) meet the same latencies, whatever order their prompts arrive in.
Answers and costs are the simulator's own (:func:`simulator.answers.answer_for`).

``served`` counts every request answered (control calls included) and ``cpu_s`` is the
process's CPU time: their differences over a run give the stand-in's CPU per request.
``python -m bench.standin --measure`` prints it for polls sent one at a time, 16 at a time and
one every 2 ms (bench/README.md has the figures).

**HTTP by hand**, because a framework's request and response objects cost more CPU per request
than everything else the stand-in does: on aiohttp's low-level server it spent 0.31-0.34 ms per
request at one poll every 2 ms, on its own protocol 0.16-0.17 ms. ``httptools`` parses; each
connection answers its requests in order as soon as a request is complete (every call is
synchronous, so pipelined requests need no queue), writing the head by hand: status line,
``Content-Type: application/json``, ``Content-Length`` and, where it differs from HTTP/1.1's
default, a ``Connection`` header. HTTP/1.1 connections stay open until the client closes them
or sends ``Connection: close``; HTTP/1.0 ones only when asked (``Connection: keep-alive``).
Bodies come with ``Content-Length`` or chunked, ``Expect: 100-continue`` is answered. What is
refused is answered, then the connection closed: a malformed request 400, a body over 1 MiB
413, a request line and headers over 64 KiB 431; a fault of the stand-in itself is 500, logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import logging
import math
import secrets
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from statistics import NormalDist
from typing import Any, Protocol, cast
from urllib.parse import unquote

import httptools

from common import eventloop
from simulator.answers import answer_for, input_digest

GENAI = "/magicplatform/v1/genai/conversation"
TOKEN_TTL_S = 3600
MAX_ENTRIES = 200_000  # conversations and messages kept at most (oldest dropped first)
COST_MIN, COST_MAX = 0.004, 0.24  # the simulator's defaults
_NORMAL = NormalDist()
_U_SCALE = float(16**13)
_log = logging.getLogger(__name__)


class StandInError(Exception):
    """A call the stand-in refuses; ``status`` is its HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Knobs:
    """The latency of answers: median seconds, log-normal sigma, cap."""

    latency_median_s: float = 0.2
    latency_sigma: float = 0.5
    latency_max_s: float = 45.0

    def patched(self, changes: dict[str, Any]) -> Knobs:
        """These knobs with ``changes`` applied; StandInError (422) for an unknown or bad one."""
        values = {
            "latency_median_s": self.latency_median_s,
            "latency_sigma": self.latency_sigma,
            "latency_max_s": self.latency_max_s,
        }
        for name, value in changes.items():
            if name not in values:
                raise StandInError(422, f"unknown knob {name!r} (knobs: {sorted(values)})")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise StandInError(422, f"{name} must be a number")
            values[name] = float(value)
        if values["latency_median_s"] < 0 or not 0 <= values["latency_sigma"] <= 5:
            raise StandInError(422, "latency_median_s must be >= 0 and latency_sigma in [0, 5]")
        if values["latency_max_s"] <= 0:
            raise StandInError(422, "latency_max_s must be > 0")
        return Knobs(**values)


def latency_for(digest: str, seed: int, knobs: Knobs) -> float:
    """Seconds until the answer to the prompt of input ``digest`` is ready (module docstring)."""
    if knobs.latency_sigma == 0 or knobs.latency_median_s == 0:
        return min(knobs.latency_median_s, knobs.latency_max_s)
    drawn = hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()
    u = (int(drawn[:13], 16) + 0.5) / _U_SCALE
    z = _NORMAL.inv_cdf(u)
    return min(knobs.latency_median_s * math.exp(knobs.latency_sigma * z), knobs.latency_max_s)


@dataclass
class Message:
    """One prompt, its answer, and what became of it (the timeline's entry)."""

    conv_id: str
    tenant: str
    asset_id: str
    digest: str
    created_at: float  # wall clock (unix s): the conversation's creation
    prompted_at: float
    ready_at: float
    response: str
    cost: float
    answered_at: float | None = None
    polls: int = 0


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


class StandIn:
    """The stand-in's state and calls, free of HTTP; one per server."""

    def __init__(self, seed: int = 1, *, clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.knobs = Knobs()
        self._clock = clock
        self._ids = itertools.count(1)
        self._id_prefix = f"{int(clock()) & 0xFFFFFFFF:08x}"
        self.reset()

    def reset(self) -> None:
        """Forgets tokens, conversations, messages and counters (not the knobs)."""
        self._tokens: dict[str, str] = {}  # token -> tenant
        self._conversations: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self.calls: Counter[str] = Counter(dict.fromkeys(("auth", "create", "prompt", "poll"), 0))
        self.rejected: Counter[str] = Counter(dict.fromkeys(("401", "429", "5xx"), 0))
        self.answers: Counter[str] = Counter(dict.fromkeys(("success", "failed"), 0))
        self.served = 0

    def _new_id(self) -> str:
        """24 hex characters, like the platform's ids."""
        return f"{self._id_prefix}{next(self._ids):016x}"

    def issue_token(self, tenant: str, username: str, password: str) -> dict[str, Any]:
        self.calls["auth"] += 1
        if not username or not password:
            self.rejected["401"] += 1
            raise StandInError(401, "invalid username or password")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = tenant
        return {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S}

    def tenant_of(self, token: str | None) -> str:
        """The tenant a bearer token was issued to; StandInError (401) when it is not ours."""
        tenant = self._tokens.get(token) if token else None
        if tenant is None:
            self.rejected["401"] += 1
            raise StandInError(401, "missing or unknown access token")
        return tenant

    def create(self, token: str | None, asset_id: object) -> str:
        self.calls["create"] += 1
        tenant = self.tenant_of(token)
        if not isinstance(asset_id, str) or not asset_id:
            raise StandInError(422, "asset_version_id must be a non-empty string")
        conv_id = self._new_id()
        self._conversations[conv_id] = (tenant, asset_id, self._clock())
        if len(self._conversations) > MAX_ENTRIES:
            self._conversations.popitem(last=False)
        return conv_id

    def prompt(self, token: str | None, conv_id: object, message: object) -> str:
        self.calls["prompt"] += 1
        tenant = self.tenant_of(token)
        if not isinstance(conv_id, str) or not isinstance(message, str):
            raise StandInError(422, "conversation_id and message must be strings")
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation[0] != tenant:
            raise StandInError(404, "unknown conversation")
        _, asset_id, created_at = conversation
        digest = input_digest(asset_id, message)
        now = self._clock()
        response, cost = answer_for(asset_id, message, COST_MIN, COST_MAX)
        message_id = self._new_id()
        self._messages[message_id] = Message(
            conv_id=conv_id,
            tenant=tenant,
            asset_id=asset_id,
            digest=digest,
            created_at=created_at,
            prompted_at=now,
            ready_at=now + latency_for(digest, self.seed, self.knobs),
            response=response,
            cost=cost,
        )
        if len(self._messages) > MAX_ENTRIES:
            self._messages.popitem(last=False)
        return message_id

    def poll(self, token: str | None, conv_id: str, message_id: str) -> dict[str, Any]:
        self.calls["poll"] += 1
        tenant = self.tenant_of(token)
        message = self._messages.get(message_id)
        if message is None or message.conv_id != conv_id or message.tenant != tenant:
            raise StandInError(404, "unknown conversation or message")
        message.polls += 1
        now = self._clock()
        if now < message.ready_at:
            return {"status": "IN_PROGRESS", "response": "", "cost": 0.0}
        if message.answered_at is None:
            message.answered_at = now
            self.answers["success"] += 1
        return {"status": "SUCCESS", "response": message.response, "cost": message.cost}

    def stats(self) -> dict[str, Any]:
        """The counters, shaped as the simulator's ``/_sim/stats`` where they overlap."""
        return {
            "calls": dict(self.calls),
            "rejected": dict(self.rejected),
            "answers": dict(self.answers),
            "served": self.served,
            "cpu_s": time.process_time(),
            "live": {"conversations": len(self._conversations), "messages": len(self._messages)},
        }

    def timeline(self) -> dict[str, dict[str, Any]]:
        """Message id -> its prompt's life, oldest first, as ``simulator.timeline`` gives it."""
        return {
            message_id: {
                "asset_id": m.asset_id,
                "input": m.digest,
                "created_at": _iso(m.created_at),
                "prompted_at": _iso(m.prompted_at),
                "ready_at": _iso(m.ready_at),
                "answered_at": _iso(m.answered_at) if m.answered_at is not None else None,
                "status": "SUCCESS" if m.answered_at is not None else "",
                "polls": m.polls,
            }
            for message_id, m in self._messages.items()
        }


# -- calls -----------------------------------------------------------------------------------


def _bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _basic(authorization: str) -> tuple[str, str]:
    """(username, password) of an HTTP Basic header; empty strings when absent or malformed."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        username, _, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return username, password


def _object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise StandInError(422, "the body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise StandInError(422, "the body is not a JSON object")
    return parsed


def route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
    """The call a request line names, and its path parameters; StandInError (404) when none.

    A plain dispatch on the path (no router): every poll goes through here."""
    if path.startswith(GENAI):
        rest = path[len(GENAI) :]
        if method == "GET" and rest.startswith("/response/"):
            parts = rest[len("/response/") :].split("/")
            if len(parts) == 2 and all(parts):
                return "poll", (parts[0], parts[1])
        elif method == "POST" and rest == "/addmessage/stream":
            return "prompt", ()
        elif method == "POST" and rest == "/create":
            return "create", ()
    elif method == "GET" and path.startswith("/accesstoken/"):
        tenant = path[len("/accesstoken/") :]
        if tenant and "/" not in tenant:
            return "auth", (tenant,)
    elif (method, path) in CONTROL:
        return CONTROL[(method, path)], ()
    raise StandInError(404, f"no such call: {method} {path}")


CONTROL = {
    ("GET", "/_sim/health"): "health",
    ("GET", "/_sim/stats"): "stats",
    ("GET", "/_sim/timeline"): "timeline",
    ("GET", "/_sim/config"): "config",
    ("PATCH", "/_sim/config"): "patch_config",
    ("POST", "/_sim/reset"): "reset",
}


def answer(
    standin: StandIn, method: str, path: str, authorization: str, body: bytes
) -> tuple[int, bytes]:
    """The status and JSON body answering one request (errors as ``{"detail"}``); the request
    is its method, its percent-decoded path, its Authorization header ("" when it has none)
    and its body."""
    try:
        call, params = route(method, path)
        if call == "poll":
            reply: object = standin.poll(_bearer(authorization), params[0], params[1])
        elif call == "prompt":
            sent = _object(body)
            message_id = standin.prompt(
                _bearer(authorization), sent.get("conversation_id"), sent.get("message")
            )
            reply = {"message_id": message_id}
        elif call == "create":
            asset_id = _object(body).get("asset_version_id")
            reply = {"conversation_id": standin.create(_bearer(authorization), asset_id)}
        elif call == "auth":
            reply = standin.issue_token(params[0], *_basic(authorization))
        elif call == "patch_config":
            standin.knobs = standin.knobs.patched(_object(body))
            reply = vars(standin.knobs)
        elif call == "health":
            reply = {"status": "ok"}
        elif call == "timeline":
            reply = standin.timeline()
        elif call == "config":
            reply = vars(standin.knobs)
        else:
            if call == "reset":
                standin.reset()
            reply = standin.stats()
    except StandInError as exc:
        return exc.status, json.dumps({"detail": exc.detail}).encode()
    return 200, json.dumps(reply).encode()


# -- HTTP/1.1 --------------------------------------------------------------------------------

MAX_BODY = 1 << 20  # bytes of a request body; more is answered 413
MAX_HEAD = 64 << 10  # bytes of a request's target and headers; more is answered 431
LINGER_S = 2.0  # after a refusal, how long what the client still sends is read and dropped
CLOSE_S = 1.0  # at stop, how long open connections get to flush what they still write

_REASONS = {
    status: HTTPStatus(status).phrase.encode()
    for status in (200, 400, 401, 404, 413, 422, 431, 500)
}
_CONNECTION = {  # (keep-alive, HTTP/1.0) -> the Connection header the answer carries
    (True, False): b"",
    (True, True): b"Connection: keep-alive\r\n",
    (False, False): b"Connection: close\r\n",
    (False, True): b"Connection: close\r\n",
}
_CLOSE = _CONNECTION[(False, False)]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _response(status: int, body: bytes, connection: bytes, *, head_only: bool = False) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        len(body),
        connection,
    )
    return head if head_only else head + body


class _Refused(Exception):
    """Stops the parser: the request is answered ``status`` and the connection closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Connection(asyncio.Protocol):
    """One client connection: parses its requests as they arrive and answers each in order
    as soon as its body is complete (every call is synchronous, so pipelined requests are
    answered in order without queueing anything)."""

    _transport: asyncio.Transport

    def __init__(self, standin: StandIn, open_connections: set[_Connection]) -> None:
        self._standin = standin
        self._open = open_connections
        self._parser = httptools.HttpRequestParser(self)
        self._out: list[bytes] = []
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._new_request()

    def _new_request(self) -> None:
        self._url = b""
        self._head_size = 0
        self._authorization = ""
        self._body: list[bytes] = []
        self._body_size = 0
        self._continue = False
        self._keep_alive = True
        self._http10 = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after a refusal or a last answer: the rest is dropped
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade request was answered with Connection: close; nothing follows
        except httptools.HttpParserError as exc:
            if not self._closing:
                refused = exc.__context__
                if isinstance(refused, _Refused):
                    self._refuse(refused.status, refused.detail)
                else:
                    self._refuse(400, f"malformed request: {exc}")
        self._flush()

    def eof_received(self) -> bool:
        return False  # the client sends no more: close once what is written is flushed

    def pause_writing(self) -> None:
        # A client that pipelines without reading: read no more until it catches up.
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        if self._linger is not None:
            self._linger.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self._new_request()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        name = name.lower()
        if name == b"authorization":
            if not self._authorization:
                self._authorization = value.decode("latin-1")
        elif name == b"content-length":
            if value.strip().isdigit() and int(value) > MAX_BODY:
                raise _Refused(413, f"the body is over {MAX_BODY} bytes")
        elif name == b"expect":
            self._continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._http10 = parser.get_http_version() == "1.0"
        self._keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        if self._continue and not self._http10:
            self._out.append(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            raise _Refused(413, f"the body is over {MAX_BODY} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        method = self._parser.get_method().decode("ascii")
        path = httptools.parse_url(self._url).path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._standin.served += 1  # before answering: /_sim/stats counts itself
        try:
            status, reply = answer(self._standin, method, path, self._authorization, body)
        except Exception:
            _log.exception("answering %s %s failed", method, path)
            status, reply = 500, json.dumps({"detail": "internal error"}).encode()
        connection = _CONNECTION[(self._keep_alive, self._http10)]
        self._out.append(_response(status, reply, connection, head_only=method == "HEAD"))
        if not self._keep_alive:
            self._flush()
            self._closing = True
            self._transport.close()

    # the rest

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise _Refused(431, f"the request line and headers are over {MAX_HEAD} bytes")

    def _flush(self) -> None:
        if self._out:
            self._transport.write(self._out[0] if len(self._out) == 1 else b"".join(self._out))
            self._out.clear()

    def _refuse(self, status: int, detail: str) -> None:
        """Answers ``status`` after what is already answered, then closes: our side at once,
        the client's once it closes too or after LINGER_S, reading and dropping what it still
        sends meanwhile (closing with unread data would reset the connection, and the client
        could lose the answer)."""
        self._standin.served += 1
        self._out.append(_response(status, json.dumps({"detail": detail}).encode(), _CLOSE))
        self._flush()
        self._closing = True
        if self._transport.can_write_eof():
            self._transport.write_eof()
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(LINGER_S, self._transport.close)
        else:  # pragma: no cover - TCP transports can always half-close
            self._transport.close()

    def close(self) -> None:
        """Closes the connection once what it has written is flushed."""
        self._closing = True
        self._transport.close()

    def abort(self) -> None:
        """Closes the connection now, dropping what it has not flushed yet."""
        self._transport.abort()


class Server:
    """A started stand-in: the port it listens on, and :meth:`cleanup` to stop it."""

    def __init__(self, server: asyncio.Server, connections: set[_Connection]) -> None:
        self._server = server
        self._connections = connections

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    async def cleanup(self) -> None:
        """Stops listening and closes every connection (after CLOSE_S, dropping what it still
        has to write)."""
        self._server.close()
        open_now = list(self._connections)
        for connection in open_now:
            connection.close()
        if open_now:
            await asyncio.wait([c.closed for c in open_now], timeout=CLOSE_S)
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()


async def start(standin: StandIn, port: int, host: str = "127.0.0.1") -> Server:
    """Starts serving ``standin`` on ``host:port`` (0: a free port); ``cleanup()`` stops it."""
    connections: set[_Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(standin, connections), host, port)
    return Server(server, connections)


def bound_port(server: Server) -> int:
    """The port a started stand-in listens on."""
    return server.port


async def serve(port: int, seed: int, host: str = "127.0.0.1") -> None:
    """Serves until SIGTERM or SIGINT."""

    await until_stopped(await start(StandIn(seed), port, host))


class Stoppable(Protocol):
    """A started server: this module's :class:`Server` or an aiohttp runner."""

    async def cleanup(self) -> None: ...


async def until_stopped(server: Stoppable) -> None:
    """Waits for SIGTERM or SIGINT, then stops ``server``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.cleanup()


# -- its own CPU per request -----------------------------------------------------------------

PACES = (  # (label, requests in flight, pause of each client between its requests)
    ("one at a time", 1, 0.0),
    ("16 at a time", 16, 0.0),
    ("one every 2 ms", 1, 0.002),
)


async def cpu_per_request(url: str, requests: int, in_flight: int, pause_s: float) -> float:
    """Milliseconds of the stand-in's CPU per request while ``requests`` polls are sent to it
    at ``url``, ``in_flight`` at a time over kept-alive connections (aiohttp's pool, as the
    platform's workers send them), each client pausing ``pause_s`` between two: the
    differences of its ``served`` and ``cpu_s`` across them, as the benchmark computes it."""
    import aiohttp

    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=in_flight)) as http:

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            async with http.request(method, path, **kwargs) as reply:
                reply.raise_for_status()
                return await reply.json()

        login = base64.b64encode(b"bench:bench").decode()
        token = (
            await call("GET", "/accesstoken/bench", headers={"Authorization": f"Basic {login}"})
        )["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        created = await call(
            "POST", f"{GENAI}/create", headers=bearer, json={"asset_version_id": "bench"}
        )
        conv_id = created["conversation_id"]
        sent = await call(
            "POST",
            f"{GENAI}/addmessage/stream",
            headers=bearer,
            json={"conversation_id": conv_id, "message": "bench"},
        )
        poll = f"{GENAI}/response/{conv_id}/{sent['message_id']}"

        async def polls(count: int) -> None:
            left = count

            async def client() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await call("GET", poll, headers=bearer)
                    if pause_s:
                        await asyncio.sleep(pause_s)

            await asyncio.gather(*(client() for _ in range(in_flight)))

        await polls(min(requests, 500))  # the pool's connections open, the code paths warm
        before = await call("GET", "/_sim/stats")
        await polls(requests)
        after = await call("GET", "/_sim/stats")
    served = after["served"] - before["served"]
    return float((after["cpu_s"] - before["cpu_s"]) * 1000 / served)


def measure(requests: int, runs: int) -> None:
    """Starts a stand-in process and prints its CPU per request at each of PACES, ``runs``
    times; this process drives it, so the two do not share a core's time."""
    import subprocess
    import sys

    from scripts.devstack import ROOT, wait_for_port
    from scripts.ports import free_ports

    (port,) = free_ports(1)
    command = [sys.executable, "-m", "bench.standin", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, server, "the stand-in", timeout=30)
        url = f"http://127.0.0.1:{port}"
        print(f"stand-in CPU per request, {requests} polls per figure (ms)")
        for run in range(1, runs + 1):
            figures = [
                eventloop.run(cpu_per_request(url, requests, in_flight, pause_s))
                for _, in_flight, pause_s in PACES
            ]
            print(
                f"run {run}: "
                + ", ".join(
                    f"{label} {f:.3f}" for (label, _, _), f in zip(PACES, figures, strict=True)
                )
            )
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--port", type=int, help="HTTP port on 127.0.0.1")
    parser.add_argument("--seed", type=int, default=1, help="seed of the latencies (%(default)s)")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="start a stand-in and print its CPU per request instead of serving",
    )
    parser.add_argument("--requests", type=int, default=5000, help="polls per figure (%(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of --measure (%(default)s)")
    opts = parser.parse_args(argv)
    if opts.measure:
        measure(opts.requests, opts.runs)
        return
    if opts.port is None:
        parser.error("--port is required to serve")
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(serve(opts.port, opts.seed))


if __name__ == "__main__":
    main()
