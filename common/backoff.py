"""The platform's one retry delay policy: exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays of ``initial_s``, then ``multiplier`` times the last, capped at ``max_s``; with
    ``jitter`` each delay is drawn uniformly between half its cap and its cap, so callers that
    failed together do not retry together, and none retries at once."""

    initial_s: float = 0.2
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """An endless sequence of delays in seconds."""
        cap = self.initial_s
        while True:
            yield cap * (0.5 + rand() / 2) if self.jitter else cap
            cap = min(cap * self.multiplier, self.max_s)
