"""The simulator's HTTP face: the platform contract of SPEC §3 plus ``/_sim/*`` controls.

=======  ==========================================================  =============================
method   path                                                        answer
=======  ==========================================================  =============================
GET      /accesstoken/{tenant}  (HTTP Basic)                         access_token, token_type,
                                                                     expires_in
POST     /magicplatform/v1/genai/conversation/create                 conversation_id
POST     /magicplatform/v1/genai/conversation/addmessage/stream      message_id
GET      /magicplatform/v1/genai/conversation/response/{conv}/{msg}  status, response, cost
GET      /_sim/health                                                {"status": "ok"}
GET      /_sim/stats                                                 counters (see PlatformState)
GET      /_sim/prompts                                               input digest -> times of its
                                                                     latest prompts (UTC ISO)
GET      /_sim/tokens                                                the access tokens still valid
GET      /_sim/timeline                                              message id -> its prompt's life
                                                                     (simulator.timeline)
POST     /_sim/reset[?config=true]                                   clears counters and state
GET      /_sim/config                                                the runtime knobs
PATCH    /_sim/config                                                changes knobs (422 when bad)
=======  ==========================================================  =============================

``PATCH /_sim/config`` replaces the knobs it names, except ``assets``, which it merges per asset
(:meth:`simulator.settings.Tunables.patched`).

Genai calls need ``Authorization: Bearer <token>`` (401 otherwise), may be answered 429 (with
``Retry-After``) or 503 as configured — globally, or for the calls that reach one asset (a
conversation created with it, a prompt to or a poll of one of its conversations) — and answer
404 for an unknown conversation or message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

from fastapi import Body, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field, ValidationError

from simulator.settings import SimulatorSettings
from simulator.state import GenaiCall, PlatformState, Session

logger = logging.getLogger(__name__)

GENAI = "/magicplatform/v1/genai/conversation"


class CreateConversation(BaseModel):
    conversation_name: str = "AI Insights"
    asset_version_id: str = Field(min_length=1)


class AddMessage(BaseModel):
    conversation_id: str = Field(min_length=1)
    message: str


def _unauthorized(detail: str, scheme: str) -> NoReturn:
    raise HTTPException(401, detail=detail, headers={"WWW-Authenticate": scheme})


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(username, password) from an HTTP Basic header, or None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def create_app(
    settings: SimulatorSettings,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """The simulator as an ASGI app; its state lives as long as the app. ``wall_clock`` is
    the time outage windows and the timeline are read against."""
    state = PlatformState(settings, wall_clock=wall_clock)
    app = FastAPI(
        title="AI platform simulator",
        description="Stand-in for the generative-AI platform (SPEC §3).",
    )
    app.state.platform = state

    def gate(
        kind: GenaiCall,
        authorization: str | None,
        asset_of: Callable[[Session], str | None],
    ) -> Session:
        """Counts the call, checks the bearer token and injects the faults configured for
        the asset the call reaches (``asset_of`` the caller's session; None when unknown)."""
        state.count(kind)
        scheme, _, token = (authorization or "").partition(" ")
        session = state.session_for(token.strip()) if scheme.lower() == "bearer" else None
        if session is None:
            state.reject("401")
            _unauthorized("missing, unknown or expired access token", "Bearer")
        refusal = state.admit(kind, asset_of(session))
        if refusal is not None and refusal.code == "429":
            retry_after = f"{refusal.retry_after_s:g}"
            raise HTTPException(429, detail=refusal.detail, headers={"Retry-After": retry_after})
        if refusal is not None:
            raise HTTPException(503, detail=refusal.detail)
        return session

    @app.get("/accesstoken/{tenant}")
    async def access_token(
        tenant: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        state.count("auth")
        credentials = _basic_credentials(authorization)
        expected = settings.password.get_secret_value() if settings.password else None
        if (
            credentials is None
            or not credentials[0]
            or not credentials[1]
            or (
                expected is not None
                and not hmac.compare_digest(credentials[1].encode(), expected.encode())
            )
        ):
            state.reject("401")
            _unauthorized("invalid username or password", 'Basic realm="platform"')
        token, expires_in = state.issue_token(tenant, credentials[0])
        return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

    @app.post(f"{GENAI}/create")
    async def create_conversation(
        body: CreateConversation, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        session = gate("create", authorization, lambda _: body.asset_version_id)
        conv_id = state.create_conversation(session, body.conversation_name, body.asset_version_id)
        return {"conversation_id": conv_id}

    @app.post(f"{GENAI}/addmessage/stream")
    async def add_message(
        body: AddMessage, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        session = gate(
            "prompt",
            authorization,
            lambda session: state.asset_of_conversation(session, body.conversation_id),
        )
        message_id = state.add_message(session, body.conversation_id, body.message)
        if message_id is None:
            raise HTTPException(404, detail="unknown conversation")
        return {"message_id": message_id}

    @app.get(f"{GENAI}/response/{{conversation_id}}/{{message_id}}")
    async def poll(
        conversation_id: str,
        message_id: str,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        session = gate(
            "poll",
            authorization,
            lambda session: state.asset_of_message(session, conversation_id, message_id),
        )
        answer = state.poll(session, conversation_id, message_id)
        if answer is None:
            raise HTTPException(404, detail="unknown conversation or message")
        return answer

    @app.get("/_sim/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return state.snapshot()

    @app.get("/_sim/prompts")
    async def prompts() -> dict[str, list[str]]:
        return state.prompt_times()

    @app.get("/_sim/timeline")
    async def timeline() -> dict[str, dict[str, Any]]:
        return state.timeline()

    @app.get("/_sim/tokens")
    async def tokens() -> list[str]:
        """The access tokens still valid: tests look for them where no token may be."""
        return state.live_tokens()

    @app.post("/_sim/reset")
    async def reset(config: bool = False) -> dict[str, Any]:
        state.reset(config=config)
        return state.snapshot()

    @app.get("/_sim/config")
    async def get_config() -> dict[str, Any]:
        return state.tunables.model_dump()

    @app.patch("/_sim/config")
    async def patch_config(changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        try:
            tunables = state.update_config(changes)
        except ValidationError as exc:
            raise HTTPException(422, detail=json.loads(exc.json(include_url=False))) from exc
        logger.info("simulator config changed: %s", sorted(changes))
        return tunables.model_dump()

    return app
