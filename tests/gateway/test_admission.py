"""The gateway's submission gate: places while submissions are taken in, and every branch of
how its limit adapts to how long they take."""

from __future__ import annotations

import pytest

from common.errors import Overloaded
from gateway.admission import DECREASE, SubmitGate, SubmitsFull


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def submit(gate: SubmitGate, clock: Clock, took_s: float) -> None:
    with gate.enter():
        clock.now += took_s


def test_past_the_places_a_submission_is_refused_at_once_and_places_come_back() -> None:
    gate = SubmitGate(2, 0.15, clock=Clock())
    with gate.enter(), gate.enter():
        with (
            pytest.raises(SubmitsFull, match="2 submissions are being taken in") as refused,
            gate.enter(),
        ):
            pass
        assert isinstance(refused.value, Overloaded) and refused.value.retry_after_s == 1
    assert gate.taking == 0
    with gate.enter():
        assert gate.taking == 1


def test_a_slow_submission_cuts_the_limit_once_per_target() -> None:
    clock = Clock()
    gate = SubmitGate(8, 0.15, clock=clock)
    with gate.enter():  # two submissions slowed by the same overloaded moment
        with gate.enter():
            clock.now += 0.5
        assert gate.limit == pytest.approx(8 * DECREASE)  # the first answered cuts it
        clock.now += 0.05
    assert gate.limit == pytest.approx(8 * DECREASE)  # the second, 0.05 s later, does not
    clock.now += 0.2
    submit(gate, clock, 0.5)  # slow, later than the target after the cut: cut again
    assert gate.limit == pytest.approx(8 * DECREASE * DECREASE)


def test_the_limit_never_falls_under_one_place() -> None:
    clock = Clock()
    gate = SubmitGate(4, 0.15, clock=clock)
    for _ in range(20):
        submit(gate, clock, 1.0)
    assert gate.limit == 1.0 and gate.places == 1


def test_quick_submissions_grow_the_limit_back_to_the_ceiling_and_no_further() -> None:
    clock = Clock()
    gate = SubmitGate(8, 0.15, clock=clock)
    for _ in range(5):
        submit(gate, clock, 1.0)
    assert gate.places < 8
    grown = []
    for _ in range(200):
        submit(gate, clock, 0.01)
        grown.append(gate.limit)
    assert grown == sorted(grown) and gate.limit == 8.0 and gate.places == 8


def test_a_submission_that_fails_does_not_move_the_limit() -> None:
    clock = Clock()
    gate = SubmitGate(8, 0.15, clock=clock)
    with pytest.raises(RuntimeError), gate.enter():
        clock.now += 5.0
        raise RuntimeError("the orchestrator refused it")
    assert gate.limit == 8.0 and gate.taking == 0


def test_a_target_of_zero_keeps_the_ceiling() -> None:
    clock = Clock()
    gate = SubmitGate(3, 0.0, clock=clock)
    for _ in range(5):
        submit(gate, clock, 10.0)
    assert gate.limit == 3.0 and gate.places == 3
