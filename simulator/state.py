"""The simulated platform itself, free of HTTP: tokens, conversations, messages, fault
injection (global and per asset) and the call counters. The answers themselves come from
:mod:`simulator.answers`.

Everything lives in memory. Tokens, conversations and messages sit in insertion-ordered dicts
that are trimmed from the front (expired tokens, answers past their retention, anything beyond
the configured maximum), so memory stays bounded however long the simulator runs; so do the
per-asset counters.
"""

from __future__ import annotations

import heapq
import math
import random
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from simulator.answers import MalformedPrompt
from simulator.answers import answer_for as answer_for
from simulator.answers import input_digest as input_digest
from simulator.settings import SimulatorSettings, Tunables
from simulator.timeline import Timeline

CallKind = Literal["auth", "create", "prompt", "poll"]
GenaiCall = Literal["create", "prompt", "poll"]

# Enough to see a prompt sent again after its section was finished, small enough to keep.
PROMPT_TIMES_PER_INPUT = 8


class AnswerStatus(StrEnum):
    """Where an answer is, as the poll call reports it."""

    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


def new_id() -> str:
    """24 lowercase hex chars, time first like the platform's ids (so they sort by age)."""
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"


@dataclass
class Session:
    """Who an access token was issued to, and until when it is valid."""

    tenant: str
    username: str
    expires_at: float


@dataclass
class Conversation:
    tenant: str
    asset_id: str
    name: str
    created_at: datetime | None = None  # wall clock, for the timeline


@dataclass
class Message:
    """One prompt and the answer it will have once ``ready_at`` has passed."""

    conv_id: str
    asset_id: str
    tenant: str
    ready_at: float
    drop_at: float
    status: AnswerStatus
    response: str
    cost: float
    error: str
    served: bool = False


@dataclass
class AssetStats:
    """What reached one asset: calls with a valid token that named it (a conversation created
    with it, a prompt to or a poll of one of its conversations), how many of those were
    refused (429, or 503 from errors and outages), and the answers it gave; and the most
    prompts it was writing at once (accepted, answer not ready yet: ``max_in_flight``), which
    shows whether the callers' concurrency limits held."""

    create: int = 0
    prompt: int = 0
    poll: int = 0
    throttled: int = 0
    errors: int = 0
    success: int = 0
    failed: int = 0
    cost_served: float = 0.0
    max_in_flight: int = 0
    # When each prompt being written is ready (a heap): those past are no longer in flight.
    writing: list[float] = field(default_factory=list)

    def prompted(self, now: float, ready_at: float) -> None:
        """A prompt accepted at ``now`` whose answer is ready at ``ready_at``."""
        while self.writing and self.writing[0] <= now:
            heapq.heappop(self.writing)
        heapq.heappush(self.writing, ready_at)
        self.max_in_flight = max(self.max_in_flight, len(self.writing))

    def as_json(self) -> dict[str, Any]:
        return {
            "create": self.create,
            "prompt": self.prompt,
            "poll": self.poll,
            "throttled": self.throttled,
            "errors": self.errors,
            "success": self.success,
            "failed": self.failed,
            "cost_served": round(self.cost_served, 4),
            "max_in_flight": self.max_in_flight,
        }


@dataclass(frozen=True)
class Refusal:
    """A genai call answered with an error instead of being served."""

    code: Literal["429", "5xx"]
    detail: str
    retry_after_s: float = 0.0  # sent with a 429


class Stats:
    """What the simulator received and answered since the last reset."""

    def __init__(self, timeline_limit: int = 100_000) -> None:
        self.calls: Counter[str] = Counter(
            {kind: 0 for kind in ("auth", "create", "prompt", "poll")}
        )
        self.rejected: Counter[str] = Counter({code: 0 for code in ("401", "429", "5xx")})
        self.answers: Counter[str] = Counter({"success": 0, "failed": 0})
        self.prompts_by_input: Counter[str] = Counter()
        # When the latest prompts of each input arrived (wall clock, UTC ISO), newest input
        # last; ``GET /_sim/prompts`` shows them so a caller can tell *when* a repeat came.
        self.prompt_times: OrderedDict[str, deque[str]] = OrderedDict()
        self.cost_served = 0.0
        # Every prompt's life (``GET /_sim/timeline``), bounded like the messages.
        self.timeline = Timeline(timeline_limit)
        # Least recently reached asset first, bounded like the messages.
        self._by_asset: OrderedDict[str, AssetStats] = OrderedDict()
        self._asset_limit = timeline_limit

    def asset(self, asset_id: str) -> AssetStats:
        """The counters of an asset, created on first use."""
        counters = self._by_asset.get(asset_id)
        if counters is None:
            counters = self._by_asset[asset_id] = AssetStats()
            while len(self._by_asset) > self._asset_limit:
                self._by_asset.popitem(last=False)
        else:
            self._by_asset.move_to_end(asset_id)
        return counters

    def by_asset(self) -> dict[str, dict[str, Any]]:
        return {asset_id: counters.as_json() for asset_id, counters in self._by_asset.items()}


class PlatformState:
    """The whole simulated platform; one per app."""

    def __init__(
        self,
        settings: SimulatorSettings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.tunables = settings.tunables()
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = random.Random(settings.seed)
        self._tokens: OrderedDict[str, Session] = OrderedDict()
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self.stats = Stats(settings.max_messages)

    # -- administration ---------------------------------------------------------------------

    def reset(self, *, config: bool = False) -> None:
        """Forgets counters, tokens, conversations and messages; with ``config`` also any
        runtime change of the knobs."""
        self._tokens.clear()
        self._conversations.clear()
        self._messages.clear()
        self.stats = Stats(self.settings.max_messages)
        self._rng = random.Random(self.settings.seed)
        if config:
            self.tunables = self.settings.tunables()

    def update_config(self, changes: dict[str, Any]) -> Tunables:
        """Applies a partial change of the knobs (see :meth:`Tunables.patched`; raises
        pydantic.ValidationError when bad)."""
        self.tunables = self.tunables.patched(changes)
        return self.tunables

    def snapshot(self) -> dict[str, Any]:
        """The counters as ``GET /_sim/stats`` reports them."""
        self._trim()
        stats = self.stats
        return {
            "calls": dict(stats.calls),
            "rejected": dict(stats.rejected),
            "answers": dict(stats.answers),
            "prompts_by_input": dict(stats.prompts_by_input),
            "cost_served": round(stats.cost_served, 4),
            "by_asset": stats.by_asset(),
            "live": {
                "tokens": len(self._tokens),
                "conversations": len(self._conversations),
                "messages": len(self._messages),
            },
        }

    def timeline(self) -> dict[str, dict[str, Any]]:
        """``GET /_sim/timeline``: message id -> its prompt's life (see
        :mod:`simulator.timeline`), oldest first, at most ``max_messages`` messages."""
        return self.stats.timeline.as_json()

    def prompt_times(self) -> dict[str, list[str]]:
        """``GET /_sim/prompts``: input digest -> arrival times of its latest prompts, oldest
        first (at most ``PROMPT_TIMES_PER_INPUT`` per input, ``max_messages`` inputs)."""
        return {digest: list(times) for digest, times in self.stats.prompt_times.items()}

    # -- calls ------------------------------------------------------------------------------

    def count(self, kind: CallKind) -> None:
        self.stats.calls[kind] += 1

    def reject(self, code: Literal["401", "429", "5xx"]) -> None:
        self.stats.rejected[code] += 1

    def issue_token(self, tenant: str, username: str) -> tuple[str, int]:
        """A new access token and the ``expires_in`` to announce (whole seconds, at least 1)."""
        self._trim()
        ttl = self.tunables.token_ttl_s
        token = secrets.token_urlsafe(32)
        self._tokens[token] = Session(tenant, username, self._clock() + ttl)
        return token, max(1, math.ceil(ttl))

    def live_tokens(self) -> list[str]:
        self._trim()
        return list(self._tokens)

    def session_for(self, token: str) -> Session | None:
        """Whose token this is, or None when it is unknown or expired."""
        session = self._tokens.get(token)
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    def asset_of_conversation(self, session: Session, conv_id: str) -> str | None:
        """The asset of this tenant's conversation, or None when it is unknown."""
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.tenant != session.tenant:
            return None
        return conversation.asset_id

    def asset_of_message(self, session: Session, conv_id: str, message_id: str) -> str | None:
        """The asset that answers this tenant's message, or None when it is unknown."""
        message = self._messages.get(message_id)
        if message is None or message.conv_id != conv_id or message.tenant != session.tenant:
            return None
        return message.asset_id

    def admit(self, kind: GenaiCall, asset_id: str | None) -> Refusal | None:
        """Counts a genai call that reaches ``asset_id`` (None: no known asset) and decides
        whether it is refused instead of served: the asset's outage first, then the injected
        ``throttle_next``/``error_next``, then the throttle and error rates, the asset's own
        values winning over the global ones."""
        counters = self.stats.asset(asset_id) if asset_id is not None else None
        if counters is not None:
            setattr(counters, kind, getattr(counters, kind) + 1)
        refusal = self._refusal(asset_id)
        if refusal is not None:
            self.stats.rejected[refusal.code] += 1
            if counters is not None and refusal.code == "429":
                counters.throttled += 1
            elif counters is not None:
                counters.errors += 1
        return refusal

    def _refusal(self, asset_id: str | None) -> Refusal | None:
        knobs = self.tunables
        own = knobs.assets.get(asset_id) if asset_id is not None else None
        if own is not None and own.is_down(self._wall_clock().timestamp()):
            return Refusal("5xx", f"asset {asset_id} is unavailable (simulated outage)")
        if knobs.throttle_next:
            self.tunables = knobs.model_copy(update={"throttle_next": knobs.throttle_next - 1})
            return Refusal("429", "too many requests", knobs.for_asset(asset_id).retry_after_s)
        if knobs.error_next:
            self.tunables = knobs.model_copy(update={"error_next": knobs.error_next - 1})
            return Refusal("5xx", "platform temporarily unavailable (simulated)")
        effective = knobs.for_asset(asset_id)
        if effective.throttle_rate and self._rng.random() < effective.throttle_rate:
            return Refusal("429", "too many requests", effective.retry_after_s)
        if effective.error_rate and self._rng.random() < effective.error_rate:
            return Refusal("5xx", "platform temporarily unavailable (simulated)")
        return None

    def create_conversation(self, session: Session, name: str, asset_id: str) -> str:
        conv_id = new_id()
        self._conversations[conv_id] = Conversation(
            session.tenant, asset_id, name, self._wall_clock().astimezone(UTC)
        )
        while len(self._conversations) > self.settings.max_conversations:
            self._conversations.popitem(last=False)
        return conv_id

    def add_message(self, session: Session, conv_id: str, message: str) -> str | None:
        """Accepts a prompt; None when the conversation is unknown to this tenant."""
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.tenant != session.tenant:
            return None
        self._trim()
        asset_id = conversation.asset_id
        knobs = self.tunables.for_asset(asset_id)
        digest = input_digest(asset_id, message)
        self.stats.prompts_by_input[digest] += 1
        self._record_prompt_time(digest)
        latency = knobs.latency_median_s * math.exp(knobs.latency_sigma * self._rng.gauss())
        latency = min(latency, knobs.latency_max_s)
        now = self._clock()
        ready_at = now + latency
        failed = asset_id in knobs.fail_assets or (
            knobs.failure_rate > 0 and self._rng.random() < knobs.failure_rate
        )
        response, cost, error = "", 0.0, ""
        if failed:
            error = f"asset {asset_id} could not answer (simulated failure)"
        else:
            try:
                response, cost = answer_for(asset_id, message, knobs.cost_min, knobs.cost_max)
            except MalformedPrompt as exc:
                error = f"malformed prompt: {exc}"
        status = AnswerStatus.FAILED if error else AnswerStatus.SUCCESS
        message_id = new_id()
        self._messages[message_id] = Message(
            conv_id=conv_id,
            asset_id=asset_id,
            tenant=session.tenant,
            ready_at=ready_at,
            drop_at=ready_at + self.settings.message_retention_s,
            status=status,
            response=response,
            cost=cost,
            error=error,
        )
        while len(self._messages) > self.settings.max_messages:
            self._messages.popitem(last=False)
        self.stats.asset(asset_id).prompted(now, ready_at)
        prompted_at = self._wall_clock().astimezone(UTC)
        self.stats.timeline.prompted(
            message_id,
            asset_id=asset_id,
            digest=digest,
            created_at=conversation.created_at or prompted_at,
            prompted_at=prompted_at,
            latency_s=latency,
        )
        return message_id

    def _record_prompt_time(self, digest: str) -> None:
        """Remembers when this input was prompted; the least recently prompted inputs go
        first once more than ``max_messages`` are kept."""
        times = self.stats.prompt_times.get(digest)
        if times is None:
            times = self.stats.prompt_times[digest] = deque(maxlen=PROMPT_TIMES_PER_INPUT)
        else:
            self.stats.prompt_times.move_to_end(digest)
        times.append(self._wall_clock().astimezone(UTC).isoformat(timespec="microseconds"))
        while len(self.stats.prompt_times) > self.settings.max_messages:
            self.stats.prompt_times.popitem(last=False)

    def poll(self, session: Session, conv_id: str, message_id: str) -> dict[str, Any] | None:
        """The poll answer, or None when the conversation or message is unknown."""
        message = self._messages.get(message_id)
        if message is None or message.conv_id != conv_id or message.tenant != session.tenant:
            return None
        now = self._wall_clock().astimezone(UTC)
        if self._clock() < message.ready_at:
            self.stats.timeline.polled(message_id, AnswerStatus.IN_PROGRESS, now)
            return {"status": AnswerStatus.IN_PROGRESS.value, "response": "", "cost": 0.0}
        self.stats.timeline.polled(message_id, message.status, now)
        if not message.served:
            message.served = True
            counters = self.stats.asset(message.asset_id)
            if message.status is AnswerStatus.SUCCESS:
                self.stats.answers["success"] += 1
                self.stats.cost_served += message.cost
                counters.success += 1
                counters.cost_served += message.cost
            else:
                self.stats.answers["failed"] += 1
                counters.failed += 1
        answer: dict[str, Any] = {
            "status": message.status.value,
            "response": message.response,
            "cost": message.cost,
        }
        if message.error:
            answer["error"] = message.error
        return answer

    def _trim(self) -> None:
        """Drops expired tokens and answers past their retention, oldest first."""
        now = self._clock()
        while self._tokens and next(iter(self._tokens.values())).expires_at <= now:
            self._tokens.popitem(last=False)
        while self._messages and next(iter(self._messages.values())).drop_at <= now:
            self._messages.popitem(last=False)
