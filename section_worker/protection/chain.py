"""The fallback chain: a job tries the assets of its section in order until one answers.

For each asset, in this order (:meth:`Chain.run`):

1. **breaker** open (here, or published by another replica) → skip;
2. **cool-down** after a 429 → skip, or wait it out when it is the chain's last asset and what
   is left is at most ``WORKER_FALLBACK_WAIT_MAX_S``;
3. **rate and concurrency** of the tenant and the asset → queue up to
   ``WORKER_LIMIT_WAIT_MAX_S`` (on the last asset, up to the job's deadline), then move on;
4. **budget**: reserve the asset's ``max_cost`` → on refusal move on (``on_budget: fail``; a
   cheaper asset further down may fit) or wait up to the deadline (``on_budget: wait``);
5. the **call** (:data:`Call`: create the conversation, send the prompt, poll for the answer):
   - answered → the breaker counts a success, the reservation settles to the real cost, done;
   - 429 → the asset cools down for the answer's ``Retry-After`` (else its ``cooldown_s``),
     published to every replica; the job moves on, first waiting out a short ``Retry-After``
     (≤ ``WORKER_FALLBACK_WAIT_MAX_S``), and tries the last asset once more after one;
   - 5xx, timeout, unreachable, or an answer FAILED → the breaker counts a failure; move on;
   - another refusal of the request (4xx) → move on, the breaker untouched;
   - a rejected access token → the job stops at once (the orchestrator renews the token).

A job that resumes a conversation an earlier dispatch started (``resume_asset``) begins on that
asset and skips steps 1-2 there: its prompt is paid for already, so it polls (or, with no
message yet, sends the prompt into that conversation); a retry of that asset after a short
``Retry-After`` resumes the same conversation again; if the attempt fails, the chain goes on
after that asset. Every attempt and skip is recorded
(:class:`Attempt`); a job fails only when the chain is exhausted (:class:`ChainExhausted`, its
message giving every attempt's reason).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from section_worker.platform_client import (
    PlatformError,
    PlatformRejected,
    Throttled,
    TokenRejected,
)
from section_worker.protection import metrics
from section_worker.protection.budgets import BudgetSpent
from section_worker.protection.guard import Protection

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    """How one attempt on one asset ended (the first four called the platform)."""

    ANSWERED = "answered"
    THROTTLED = "throttled"
    FAILED = "failed"
    REJECTED = "rejected"
    BREAKER_OPEN = "breaker_open"
    COOLING_DOWN = "cooling_down"
    LIMITED = "limited"
    BUDGET = "budget"


@dataclass(frozen=True)
class Attempt:
    """One step of a job's path through its chain."""

    asset_id: str
    outcome: Outcome
    reason: str = ""
    cost: float = 0.0
    duration_s: float = 0.0


@dataclass(frozen=True)
class Answer:
    """What the asset wrote, and what it cost."""

    response: str
    cost: float
    asset_id: str = ""  # the asset that wrote it (set by the job's platform client's ask)


class AnswerFailed(PlatformError):
    """The platform answered FAILED: the asset could not write this answer."""


class ChainExhausted(Exception):
    """Every asset of the chain was tried or skipped; the message lists why, in order."""

    def __init__(self, attempts: list[Attempt]) -> None:
        reasons = "; ".join(f"{a.asset_id} {a.outcome}: {a.reason}" for a in attempts)
        super().__init__(f"every asset of the chain failed ({reasons})")
        self.attempts = attempts


# One attempt on one asset: (asset_id, resuming) -> the answer, or a PlatformError.
Call = Callable[[str, bool], Awaitable[Answer]]


@dataclass(frozen=True)
class ChainJob:
    """What the chain needs to know of a job."""

    job_id: str
    task_id: str
    tenant: str  # who pays: the principal's tenant
    assets: tuple[str, ...]
    deadline: float  # monotonic time the job must end by
    resume_asset: str = ""  # set: resume the conversation an earlier dispatch made there
    section: str = ""  # its section, whose task_ceiling (when set) replaces the tenant's


# What an attempt asks the loop to do next: None to move on, or a short pause first.
_Next = Answer | float | None


class Chain:
    """Runs jobs through their fallback chains under one worker's protection."""

    def __init__(
        self, protection: Protection, *, fallback_wait_max_s: float, limit_wait_max_s: float
    ) -> None:
        self._p = protection
        self._wait_max = fallback_wait_max_s
        self._limit_wait = limit_wait_max_s

    async def run(self, job: ChainJob, call: Call, attempts: list[Attempt]) -> tuple[str, Answer]:
        """The asset that answered and its answer; appends every attempt to ``attempts``
        (kept by the caller even when this raises). Raises :class:`ChainExhausted`, or
        TokenRejected as soon as the platform refuses the job's token."""
        chain = job.assets
        index = chain.index(job.resume_asset) if job.resume_asset in chain else 0
        resuming = bool(job.resume_asset)
        if resuming and job.resume_asset not in chain:
            chain = (job.resume_asset, *chain)
        retried_last = False
        while index < len(chain):
            asset = chain[index]
            last = index == len(chain) - 1
            step = await self._attempt(job, asset, call, attempts, resuming=resuming, last=last)
            if isinstance(step, Answer):
                return asset, step
            if step is not None and (not last or not retried_last):
                # A short Retry-After: wait it out, then the next asset (or this last one again).
                if time.monotonic() + step >= job.deadline:
                    break
                await asyncio.sleep(step)
                if last:
                    # The same asset again: a resumed conversation is resumed again, so its
                    # prompt is neither sent twice nor moved to a new conversation.
                    retried_last = True
                    continue
            resuming = False
            index += 1
            if index < len(chain):
                metrics.FALLBACKS.labels(from_asset=asset, to_asset=chain[index]).inc()
                logger.info("job %s moves on from asset %s to %s", job.job_id, asset, chain[index])
        raise ChainExhausted(attempts)

    async def _attempt(
        self,
        job: ChainJob,
        asset: str,
        call: Call,
        attempts: list[Attempt],
        *,
        resuming: bool,
        last: bool,
    ) -> _Next:
        p = self._p
        asset_cfg = p.config.asset(asset)
        tenant_cfg = p.config.tenant_for(job.tenant, job.section)
        started = time.monotonic()

        def record(outcome: Outcome, reason: str = "", cost: float = 0.0) -> None:
            attempts.append(Attempt(asset, outcome, reason, cost, time.monotonic() - started))
            metrics.PLATFORM_REQUESTS.labels(asset=asset, outcome=outcome.value).inc()

        breaker = p.breakers.breaker(asset)
        if not resuming:
            flags = await p.store.asset_flags(asset)
            p.breakers.observe_published(asset, flags.open_s)
            if flags.cooldown_s > 0:
                wait = last and flags.cooldown_s <= self._wait_max
                if not wait or started + flags.cooldown_s >= job.deadline:
                    record(Outcome.COOLING_DOWN, f"cooling down for {flags.cooldown_s:.1f}s")
                    return None
                await asyncio.sleep(flags.cooldown_s)
            if not breaker.allow():
                left = breaker.seconds_open()
                why = f"circuit breaker open for {left:.1f}s" if left else "half-open, probing"
                record(Outcome.BREAKER_OPEN, why)
                return None
        wait_until = job.deadline if last else min(job.deadline, started + self._limit_wait)
        permit = await p.quotas.acquire(job.tenant, tenant_cfg, asset, asset_cfg, wait_until)
        if permit is None:
            breaker.abandon()
            waited = time.monotonic() - started
            record(
                Outcome.LIMITED,
                f"rate or concurrency limit of asset {asset} or tenant {job.tenant} "
                f"still full after {waited:.1f}s",
            )
            return None
        try:
            try:
                reservation = await p.budgets.reserve(
                    job.tenant, tenant_cfg, job.task_id, asset_cfg.max_cost, job.deadline
                )
            except BudgetSpent as spent:
                breaker.abandon()
                record(Outcome.BUDGET, str(spent))
                return None
            cost = 0.0
            try:
                answer = await call(asset, resuming)
                cost = answer.cost
            finally:
                await asyncio.shield(p.budgets.settle(reservation, cost))
        except Throttled as exc:
            breaker.abandon()
            pause = exc.retry_after if exc.retry_after is not None else asset_cfg.cooldown_s
            if pause > 0:
                await p.store.cool_down(asset, pause)
                metrics.COOLDOWNS.labels(asset=asset).inc()
            record(Outcome.THROTTLED, f"{exc}; cooling down for {pause:g}s")
            return pause if exc.retry_after is not None and pause <= self._wait_max else None
        except TokenRejected:
            breaker.abandon()
            raise
        except PlatformRejected as exc:
            breaker.abandon()
            record(Outcome.REJECTED, str(exc))
            return None
        except PlatformError as exc:
            await p.breakers.failure(asset)
            record(Outcome.FAILED, str(exc))
            return None
        except BaseException:
            breaker.abandon()
            raise
        finally:
            await asyncio.shield(p.quotas.release(permit))
        await p.breakers.success(asset)
        record(Outcome.ANSWERED, cost=answer.cost)
        return answer
