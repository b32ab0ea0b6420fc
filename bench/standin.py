"""A light stand-in for the AI platform, for the benchmarks: the platform's calls (SPEC §3)
and the simulator's ``/_sim/*`` read-outs the benchmark uses, on aiohttp, and little else.

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
import math
import secrets
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

from aiohttp import web

from common import eventloop
from simulator.answers import answer_for, input_digest

GENAI = "/magicplatform/v1/genai/conversation"
TOKEN_TTL_S = 3600
MAX_ENTRIES = 200_000  # conversations and messages kept at most (oldest dropped first)
COST_MIN, COST_MAX = 0.004, 0.24  # the simulator's defaults
_NORMAL = NormalDist()
_U_SCALE = float(16**13)


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


# -- HTTP ------------------------------------------------------------------------------------


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


def _bearer(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _basic(request: web.BaseRequest) -> tuple[str, str]:
    """(username, password) of an HTTP Basic header; empty strings when absent or malformed."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        username, _, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return username, password


async def _body(request: web.BaseRequest) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise StandInError(422, "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise StandInError(422, "the body is not a JSON object")
    return body


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


async def answer(standin: StandIn, request: web.BaseRequest) -> web.Response:
    """Serves one request (every answer JSON, errors as ``{"detail"}``)."""
    standin.served += 1
    try:
        call, params = route(request.method, request.path)
        if call == "poll":
            return _json(standin.poll(_bearer(request), params[0], params[1]))
        if call == "prompt":
            body = await _body(request)
            token = _bearer(request)
            message_id = standin.prompt(token, body.get("conversation_id"), body.get("message"))
            return _json({"message_id": message_id})
        if call == "create":
            body = await _body(request)
            return _json(
                {"conversation_id": standin.create(_bearer(request), body.get("asset_version_id"))}
            )
        if call == "auth":
            return _json(standin.issue_token(params[0], *_basic(request)))
        if call == "patch_config":
            standin.knobs = standin.knobs.patched(await _body(request))
            return _json(vars(standin.knobs))
        if call == "reset":
            standin.reset()
        if call == "health":
            return _json({"status": "ok"})
        if call == "timeline":
            return _json(standin.timeline())
        if call == "config":
            return _json(vars(standin.knobs))
        return _json(standin.stats())
    except StandInError as exc:
        return _json({"detail": exc.detail}, exc.status)


async def start(standin: StandIn, port: int, host: str = "127.0.0.1") -> web.ServerRunner:
    """Starts serving ``standin`` on ``host:port`` (0: a free port); ``cleanup()`` stops it.
    aiohttp's low-level server: no router, no middleware, no access log."""

    async def handler(request: web.BaseRequest) -> web.Response:
        return await answer(standin, request)

    runner = web.ServerRunner(web.Server(handler, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.ServerRunner) -> int:
    """The port a started runner listens on."""
    return int(runner.addresses[0][1])


async def serve(port: int, seed: int, host: str = "127.0.0.1") -> None:
    """Serves until SIGTERM or SIGINT."""

    await until_stopped(await start(StandIn(seed), port, host))


async def until_stopped(runner: web.BaseRunner) -> None:
    """Waits for SIGTERM or SIGINT, then stops ``runner`` (a started aiohttp server)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--seed", type=int, default=1, help="seed of the latencies (%(default)s)")
    opts = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(serve(opts.port, opts.seed))


if __name__ == "__main__":
    main()
