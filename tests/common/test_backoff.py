"""common.backoff: the waits every retry loop draws, deterministic under an injected draw."""

from __future__ import annotations

import itertools
import random

import pytest

from common.backoff import Backoff


def test_ceilings_grow_by_the_multiplier_up_to_the_maximum() -> None:
    policy = Backoff(initial_s=0.1, max_s=1.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert Backoff(0.2, 10.0, multiplier=1.5).ceiling(3) == pytest.approx(0.45)
    assert Backoff(5.0, 2.0).ceiling(1) == 2.0  # max_s caps even the first wait


def test_an_endless_loop_never_overflows() -> None:
    assert Backoff(0.2, 5.0).ceiling(100_000) == 5.0
    assert Backoff(0.2, 5.0, jitter=0).delay(100_000) == 5.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    policy = Backoff(initial_s=1.0, max_s=8.0)
    assert policy.delay(3, rand=lambda: 0.0) == 4.0
    assert policy.delay(3, rand=lambda: 0.75) == 1.0
    assert policy.delay(3, rand=lambda: 0.999) == pytest.approx(0.004)


def test_partial_jitter_keeps_the_rest_of_the_ceiling() -> None:
    policy = Backoff(initial_s=1.0, max_s=8.0, jitter=0.5)
    assert policy.delay(2, rand=lambda: 0.0) == 2.0
    assert policy.delay(2, rand=lambda: 0.5) == 1.5
    assert policy.delay(2, rand=lambda: 0.999) == pytest.approx(1.001)


def test_no_jitter_waits_the_ceiling() -> None:
    policy = Backoff(initial_s=0.5, max_s=10.0, jitter=0.0)
    assert list(itertools.islice(policy.delays(), 7)) == [0.5, 1, 2, 4, 8, 10, 10]


def test_delays_are_the_waits_of_retries_one_two_three() -> None:
    policy = Backoff(initial_s=0.1, max_s=2.0)
    seeded = list(itertools.islice(policy.delays(random.Random(7).random), 8))
    draws = random.Random(7)
    assert seeded == [policy.delay(n, draws.random) for n in range(1, 9)]
    assert all(0 < d <= policy.ceiling(n) for n, d in enumerate(seeded, start=1))
    assert len(set(seeded)) == len(seeded)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"initial_s": 0, "max_s": 1}, "positive"),
        ({"initial_s": 1, "max_s": -1}, "positive"),
        ({"initial_s": 1, "max_s": 2, "multiplier": 0.5}, "multiplier"),
        ({"initial_s": 1, "max_s": 2, "jitter": 1.5}, "jitter"),
        ({"initial_s": 1, "max_s": 2, "jitter": -0.1}, "jitter"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Backoff(**kwargs)


def test_retries_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff(0.1, 1.0).delay(0)
