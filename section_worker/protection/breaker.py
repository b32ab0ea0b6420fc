"""Circuit breakers, one per platform asset, shared by every job of this worker and published
to the other replicas through the store.

States (:class:`State`)::

    closed ──N failures, or a failure ratio with min_calls, within window_s──▶ open
    open ──after open_s──▶ half-open: at most half_open_probes calls at once
    half-open ──a probe succeeds──▶ closed          half-open ──a probe fails──▶ open

A call that is neither a success nor a failure of the asset (a 429, a refusal of the request
itself, a job that never made its call) gives its probe back (:meth:`Breaker.abandon`).

When a breaker opens, :class:`BreakerBook` publishes the open state with its remaining time;
a replica that sees an asset published open while its own breaker is closed opens its own for
the time left (:meth:`Breaker.force_open`), so it skips the asset too and then probes it like
the replica that opened it. A probe that closes a breaker clears the published state.

The libraries considered (pybreaker, aiobreaker, purgatory) count consecutive failures only
(no failure ratio over a window with a minimum of calls), and their shared storages are either
synchronous or all-or-nothing; this state machine is small enough to own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from common.platform_config import BreakerConfig
from section_worker.protection import metrics
from section_worker.protection.store import Store

logger = logging.getLogger(__name__)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


@dataclass
class Breaker:
    """One asset's breaker. ``clock`` is monotonic seconds (replaceable for tests)."""

    asset: str
    config: BreakerConfig
    clock: Callable[[], float] = time.monotonic
    state: State = State.CLOSED
    opened_until: float = 0.0
    probes: int = 0  # calls in flight while half-open
    _calls: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, failed)

    def current(self) -> State:
        """The state now (an open breaker whose time is over is half-open)."""
        if self.state is State.OPEN and self.clock() >= self.opened_until:
            self._move(State.HALF_OPEN)
            self.probes = 0
        return self.state

    def allow(self) -> bool:
        """Whether a call may go to the asset now; a half-open breaker counts it as a probe."""
        state = self.current()
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self.probes < self.config.half_open_probes:
            self.probes += 1
            return True
        return False

    def abandon(self) -> None:
        """A call :meth:`allow` let through did not test the asset; its probe is given back."""
        if self.state is State.HALF_OPEN and self.probes > 0:
            self.probes -= 1

    def success(self) -> bool:
        """Records a successful call; True when that closed the breaker."""
        if self.state is State.HALF_OPEN:
            self._move(State.CLOSED)
            self.probes = 0
            self._calls.clear()
            return True
        self._record(failed=False)
        return False

    def failure(self) -> bool:
        """Records a failed call; True when that opened the breaker."""
        if self.state is State.HALF_OPEN:
            self._open(self.config.open_s)
            return True
        if self.state is State.OPEN:
            return False
        self._record(failed=True)
        failures = sum(failed for _, failed in self._calls)
        calls = len(self._calls)
        cfg = self.config
        if failures >= cfg.failures or (
            calls >= cfg.min_calls and failures / calls >= cfg.failure_ratio
        ):
            self._open(cfg.open_s)
            return True
        return False

    def force_open(self, seconds: float) -> None:
        """Opens for ``seconds`` because another replica published the asset open (a longer
        local opening is kept)."""
        until = self.clock() + seconds
        if self.state is not State.OPEN or until > self.opened_until:
            self._open(seconds)

    def seconds_open(self) -> float:
        return max(0.0, self.opened_until - self.clock()) if self.state is State.OPEN else 0.0

    def _record(self, *, failed: bool) -> None:
        now = self.clock()
        self._calls.append((now, failed))
        horizon = now - self.config.window_s
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()

    def _open(self, seconds: float) -> None:
        self._move(State.OPEN)
        self.opened_until = self.clock() + seconds
        self.probes = 0
        self._calls.clear()

    def _move(self, state: State) -> None:
        if state is not self.state:
            logger.warning("breaker of asset %s: %s -> %s", self.asset, self.state, state)
            self.state = state
        metrics.BREAKER_STATE.labels(asset=self.asset).set(_GAUGE[state])


class BreakerBook:
    """Every asset's breaker on this worker, and their publication through ``store``."""

    def __init__(
        self,
        store: Store,
        config_of: Callable[[str], BreakerConfig],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._config_of = config_of
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}

    def breaker(self, asset: str) -> Breaker:
        found = self._breakers.get(asset)
        if found is None:
            found = self._breakers[asset] = Breaker(asset, self._config_of(asset), self._clock)
        return found

    def states(self) -> dict[str, str]:
        """The state now of every asset's breaker this worker has used."""
        return {asset: breaker.current().value for asset, breaker in self._breakers.items()}

    def observe_published(self, asset: str, open_s: float) -> None:
        """Takes in what the store says: an asset published open for ``open_s`` more seconds
        is open here too (unless this breaker is already probing it)."""
        breaker = self.breaker(asset)
        if open_s > 0 and breaker.current() is State.CLOSED:
            breaker.force_open(open_s)

    async def success(self, asset: str) -> None:
        if self.breaker(asset).success():
            await self._store.clear_open(asset)

    async def failure(self, asset: str) -> None:
        breaker = self.breaker(asset)
        if breaker.failure():
            await self._store.publish_open(asset, breaker.seconds_open())
