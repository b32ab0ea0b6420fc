"""Admission: a principal's submission rate and tasks in flight are bounded, each principal on
its own, a submission in progress holds its place, and a refusal says when to try again."""

from __future__ import annotations

import contextlib

import pytest

from common.errors import Overloaded
from common.principals import Principal
from orchestrator.admission import Admission, Throttled

ALICE = Principal(id="alice", tenant="t")
BOB = Principal(id="bob", tenant="t")


def _submit(admission: Admission, caller: Principal) -> None:
    with admission.admit(caller):
        pass


def test_the_rate_is_counted_per_principal() -> None:
    admission = Admission(rate_per_minute=3, max_in_flight=100)
    for _ in range(3):
        _submit(admission, ALICE)
    with pytest.raises(Throttled) as refused:
        _submit(admission, ALICE)
    assert isinstance(refused.value, Overloaded)  # 429 through the error table
    assert 1 <= refused.value.retry_after_s <= 60
    assert "3 submissions a minute" in str(refused.value)
    _submit(admission, BOB)  # another principal is not held back


def test_tasks_in_flight_are_bounded_until_one_finishes() -> None:
    admission = Admission(rate_per_minute=1000, max_in_flight=2)
    admission.started("alice")
    admission.started("alice")
    with pytest.raises(Throttled, match="2 of your tasks are still running") as refused:
        _submit(admission, ALICE)
    assert refused.value.retry_after_s > 0
    _submit(admission, BOB)
    admission.finished("alice")
    _submit(admission, ALICE)
    assert admission.in_flight("alice") == 1


def test_submissions_in_progress_hold_their_places() -> None:
    """Concurrent submissions cannot all pass before any of them has started its task."""
    admission = Admission(rate_per_minute=1000, max_in_flight=2)
    with contextlib.ExitStack() as held:
        held.enter_context(admission.admit(ALICE))
        held.enter_context(admission.admit(ALICE))
        with pytest.raises(Throttled):
            _submit(admission, ALICE)
    assert admission.in_flight("alice") == 0  # places given back when the submissions end


def test_counts_of_finished_principals_are_forgotten() -> None:
    admission = Admission(rate_per_minute=10, max_in_flight=10)
    admission.started("alice")
    admission.finished("alice")
    _submit(admission, ALICE)
    assert admission.in_flight("alice") == 0
    assert admission.principals_in_flight() == 0
