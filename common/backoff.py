"""The one backoff policy of the platform: how long to wait before the next attempt.

Every retry loop (S3 calls, platform calls, start-up waits, lease and task writes) draws its
waits from a :class:`Backoff`; each call site keeps only its own answer to "is this error
transient?", its bound (attempts or a deadline) and any wait the other side asks for
(``Retry-After``).

The ceiling of the n-th wait grows geometrically, ``initial_s * multiplier**(n-1)``, up to
``max_s``. ``jitter`` is the share of the ceiling drawn at random: 1.0 is *full jitter* (a
uniform draw in (0, ceiling]; replicas that failed together do not retry together), 0.5 waits
between half the ceiling and the ceiling, 0.0 waits exactly the ceiling.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Rand = Callable[[], float]
"""A source of uniform draws in [0, 1), such as ``random.Random(seed).random``."""


@dataclass(frozen=True)
class Backoff:
    """Waits growing from ``initial_s`` by ``multiplier`` up to ``max_s``, ``jitter`` of each
    drawn at random (1.0: full jitter)."""

    initial_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if not self.initial_s > 0 or not self.max_s > 0:
            raise ValueError("initial_s and max_s must be positive")
        if not self.multiplier >= 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retries are counted from 1")
        try:
            return min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))
        except OverflowError:  # an endless loop's thousandth retry: long since at max_s
            return self.max_s

    def delay(self, retry: int, rand: Rand = random.random) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        return self.ceiling(retry) * (1.0 - self.jitter * rand())

    def delays(self, rand: Rand = random.random) -> Iterator[float]:
        """The waits before retries 1, 2, 3, ... without end: the caller bounds the loop."""
        retry = 1
        while True:
            yield self.delay(retry, rand)
            retry += 1
