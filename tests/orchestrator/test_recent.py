"""Finished tasks kept in memory: summaries without input records or sealed passwords, bounded
in bytes and in age."""

from __future__ import annotations

import pytest

from orchestrator import recent as recent_module
from orchestrator.models import SectionResult, SectionState
from orchestrator.recent import RecentTasks, estimated_size
from tests.orchestrator.factories import task_record
from tests.orchestrator.fakes import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(recent_module, "time", fake)
    return fake


def _finished(n: int, response: str = "r"):
    section = SectionResult(
        status=SectionState.COMPLETED, response=response, record_index=0, asset_id="a"
    )
    return task_record(
        task_id=f"task_20261128000000_0000{n:04x}",
        data=[{"big": "x" * 10_000}],
        password_sealed="aesgcm1:sealed",
        result_data={"s": section},
    )


def test_a_summary_keeps_what_reads_show_and_drops_inputs_and_the_seal(clock) -> None:
    kept = RecentTasks(max_bytes=1 << 20, max_age_s=60)
    kept.add(_finished(1, response="the answer"))
    summary = kept.get(_finished(1).task_id)
    assert summary is not None
    assert summary.data == [] and summary.password_sealed == ""
    assert summary.result_data["s"].response == "the answer"


def test_the_oldest_go_when_the_bytes_are_exceeded(clock) -> None:
    one = estimated_size(_finished(0, response="x" * 1000))
    kept = RecentTasks(max_bytes=3 * one, max_age_s=60)
    for n in range(5):
        kept.add(_finished(n, response="x" * 1000))
        clock.advance(0.1)
    assert len(kept) == 3
    assert kept.bytes <= 3 * one
    assert kept.get(_finished(0).task_id) is None
    assert kept.get(_finished(4).task_id) is not None


def test_entries_older_than_the_age_are_gone(clock) -> None:
    kept = RecentTasks(max_bytes=1 << 20, max_age_s=60)
    kept.add(_finished(1))
    clock.advance(59)
    assert kept.get(_finished(1).task_id) is not None
    clock.advance(2)
    assert kept.get(_finished(1).task_id) is None
    assert len(kept) == 0 and kept.bytes == 0


def test_adding_a_task_again_replaces_it(clock) -> None:
    kept = RecentTasks(max_bytes=1 << 20, max_age_s=60)
    kept.add(_finished(1))
    kept.add(_finished(1, response="newer"))
    assert len(kept) == 1
    assert kept.bytes == estimated_size(kept.get(_finished(1).task_id))  # type: ignore[arg-type]
