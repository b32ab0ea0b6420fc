"""Every state change of a task record, called directly on records: progress milestones,
sections finishing, the ends (fail, cancel, dead letter, aggregate), retry and takeover."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from common.errors import WrongState
from common.timeutil import parse_iso
from orchestrator import transitions
from orchestrator.models import Continued, SectionResult, SectionState, TaskRecord, TaskState
from orchestrator.worker_client import Attempt, Outcome
from tests.orchestrator.factories import task_record


def _section(
    i: int, status: SectionState = SectionState.PENDING, **fields: object
) -> SectionResult:
    return SectionResult(status=status, record_index=i, asset_id=f"asset{i}", **fields)  # type: ignore[arg-type]


def _record(*statuses: SectionState, **fields: object) -> TaskRecord:
    sections = {f"s{i}": _section(i, status) for i, status in enumerate(statuses)}
    return task_record(
        data=[{}] * len(sections),
        result_data=sections,
        created_at="2026-01-01T00:00:00.000000",
        updated_at="2026-01-01T00:00:00.000000",
        **fields,
    )


def _ok(conv: str = "", msg: str = "", cost: float = 0.0) -> Outcome:
    return Outcome(success=True, response="r", cost=cost, conv_id=conv, message_id=msg)


# -- milestones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "progress"),
    [
        (TaskState.PENDING, 0),
        (TaskState.AUTHENTICATING, 10),
        (TaskState.AUTHENTICATED, 20),
        (TaskState.DETECTING, 40),
        (TaskState.PROCESSING, 50),
    ],
)
def test_set_state_sets_the_milestone_progress(state: TaskState, progress: int) -> None:
    record = _record(SectionState.PENDING, progress=33)
    transitions.set_state(record, state, "step")
    assert record.status == state
    assert record.progress == progress
    assert record.message == "step"
    assert record.updated_at != "2026-01-01T00:00:00.000000"


def test_detecting_section_is_40() -> None:
    assert transitions.PROGRESS[TaskState.DETECTING] == 40


def test_set_state_to_a_state_without_milestone_keeps_progress() -> None:
    record = _record(SectionState.PENDING, progress=70)
    transitions.set_state(record, TaskState.COMPLETED, "x")
    assert record.progress == 70


def test_start_section_marks_it_running() -> None:
    record = _record(SectionState.PENDING, SectionState.PENDING)
    transitions.start_section(record, "s1")
    assert record.result_data["s1"].status == SectionState.RUNNING
    assert record.result_data["s0"].status == SectionState.PENDING


def test_a_sent_prompt_records_its_ids_asset_and_worker() -> None:
    record = _record(SectionState.RUNNING, SectionState.RUNNING)
    sent = {"conv_id": "c0", "message_id": "m0", "asset_id": "a0", "worker": "w:1"}

    transitions.prompt_sent(record, "s0", **sent)

    section = record.result_data["s0"]
    assert (section.conv_id, section.message_id, section.conv_asset_id, section.worker) == (
        "c0",
        "m0",
        "a0",
        "w:1",
    )
    assert record.result_data["s1"] == _section(1, SectionState.RUNNING)
    assert record.trace == []


def test_a_prompt_replacing_another_is_traced() -> None:
    record = _record(SectionState.RUNNING)
    transitions.prompt_sent(record, "s0", conv_id="c0", message_id="m0", asset_id="a", worker="w")
    transitions.prompt_sent(record, "s0", conv_id="c0", message_id="m0", asset_id="a", worker="v")
    assert record.trace == []  # the same message, resumed elsewhere

    transitions.prompt_sent(record, "s0", conv_id="c1", message_id="m1", asset_id="a", worker="v")

    assert (record.result_data["s0"].conv_id, record.result_data["s0"].message_id) == ("c1", "m1")
    assert [(t.step, t.detail) for t in record.trace] == [
        ("Prompt sent again", "s0: message m0 will never be answered; sent as message m1")
    ]


def test_a_placement_names_the_worker_until_the_section_finishes() -> None:
    record = _record(SectionState.RUNNING, SectionState.COMPLETED)

    transitions.placed(record, "s0", "w:1")
    transitions.placed(record, "s1", "w:1")

    assert record.result_data["s0"].worker == "w:1"
    assert record.result_data["s1"].worker == ""


def test_a_prompt_reported_after_its_section_finished_changes_nothing() -> None:
    record = _record(SectionState.RUNNING)
    transitions.finish_section(record, "s0", _ok("c0", "m0"), dispatches=1, started=0.0)
    before = record.model_copy(deep=True)

    transitions.prompt_sent(record, "s0", conv_id="c1", message_id="m1", asset_id="a", worker="w")

    assert record == before


# -- finishing sections ---------------------------------------------------------------------


def test_a_section_given_up_on_keeps_the_ids_it_reached() -> None:
    record = _record(SectionState.RUNNING, SectionState.RUNNING)
    for name in ("s0", "s1"):
        transitions.prompt_sent(record, name, conv_id="c", message_id="m", asset_id="a", worker="w")

    given_up = Outcome.failed("gave up after 4 dispatches: lost")
    transitions.finish_section(record, "s0", given_up, dispatches=4, started=0.0)
    failed = Outcome(success=False, conv_id="c2", message_id="", error="timed out sending")
    transitions.finish_section(record, "s1", failed, dispatches=1, started=0.0)

    assert (record.result_data["s0"].conv_id, record.result_data["s0"].message_id) == ("c", "m")
    assert (record.result_data["s1"].conv_id, record.result_data["s1"].message_id) == ("c2", "")


def test_finish_section_records_the_outcome_and_shares_the_span() -> None:
    record = _record(SectionState.RUNNING, SectionState.RUNNING, SectionState.RUNNING)
    record.status = TaskState.PROCESSING
    outcome = _ok("c0", "m0", cost=0.5)
    transitions.finish_section(record, "s0", outcome, dispatches=2, started=time.monotonic())

    section = record.result_data["s0"]
    assert section.status == SectionState.COMPLETED
    assert (section.response, section.cost, section.conv_id, section.message_id) == (
        "r",
        0.5,
        "c0",
        "m0",
    )
    assert section.dispatches == 2
    assert record.progress == 50 + 45 // 3  # 65
    assert record.status == TaskState.PROCESSING  # others still run
    assert record.trace[-1].step == "3. Section s0"
    assert record.trace[-1].detail == "cost $0.5000"

    transitions.finish_section(
        record, "s1", Outcome.failed("boom"), dispatches=1, started=time.monotonic()
    )
    assert record.result_data["s1"].status == SectionState.ERROR
    assert record.result_data["s1"].error == "boom"
    assert record.trace[-1].detail == "boom"
    assert record.progress == 50 + (45 * 2) // 3  # 80


def test_last_section_to_finish_aggregates_the_task() -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING)
    record.result_data["s0"].conv_id = "c0"
    record.result_data["s0"].cost = 0.25
    transitions.finish_section(
        record, "s1", _ok("c1", "m1", 0.5), dispatches=1, started=time.monotonic()
    )
    assert record.status == TaskState.COMPLETED
    assert record.progress == 100
    assert record.cost == 0.75
    assert record.conv_id == "c0, c1"
    assert record.completed_at is not None
    assert record.trace[-1].step == "4. Aggregate"


def test_last_section_failing_ends_the_task_in_error() -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING)
    transitions.finish_section(
        record, "s1", Outcome.failed("boom"), dispatches=4, started=time.monotonic()
    )
    assert record.status == TaskState.ERROR
    assert record.message == "1 of 2 sections failed: s1: boom"


def test_finish_section_keeps_the_answering_asset_and_the_path() -> None:
    record = _record(SectionState.RUNNING, SectionState.RUNNING)
    record.status = TaskState.PROCESSING
    path = (
        Attempt("a", "throttled", "429; cooling down for 60s", 0.0, 0.0123),
        Attempt("b", "answered", "", 0.2, 1.5),
    )
    answered = Outcome(success=True, response="r", cost=0.2, asset_id="b", attempts=path)
    transitions.finish_section(record, "s0", answered, dispatches=1, started=time.monotonic())

    section = record.result_data["s0"]
    assert (section.asset_id, section.model_used) == ("b", "b")
    assert [(a.asset_id, a.outcome, a.reason, a.cost) for a in section.attempts] == [
        ("a", "throttled", "429; cooling down for 60s", 0.0),
        ("b", "answered", "", 0.2),
    ]
    assert section.attempts[0].duration_s == 0.012
    assert record.trace[-1].detail == "cost $0.2000; answered by b after 1 fallback(s)"

    exhausted = Outcome(success=False, error="every asset failed", asset_id="b", attempts=path[:1])
    transitions.finish_section(record, "s1", exhausted, dispatches=1, started=time.monotonic())
    failed = record.result_data["s1"]
    # A failed section keeps its chain's first asset, so that a retry starts the chain over.
    assert (failed.asset_id, failed.model_used) == ("asset1", "")
    assert [a.outcome for a in failed.attempts] == ["throttled"]


# -- aggregate ------------------------------------------------------------------------------


def test_aggregate_keeps_one_position_per_section() -> None:
    record = _record(SectionState.COMPLETED, SectionState.COMPLETED, SectionState.COMPLETED)
    ids = {"s0": ("c1", "m1"), "s1": ("", ""), "s2": ("c3", "m3")}
    for name, (conv, msg) in ids.items():
        record.result_data[name].conv_id = conv
        record.result_data[name].message_id = msg
    transitions.aggregate(record)
    assert record.conv_id == "c1, , c3"
    assert record.message_id == "m1, , m3"
    assert record.status == TaskState.COMPLETED
    assert record.message == "All 3 sections completed"
    assert record.trace[-1].status == "completed"


def test_aggregate_sums_cost_rounded_and_names_every_failed_section() -> None:
    record = _record(SectionState.COMPLETED, SectionState.ERROR, SectionState.CANCELLED)
    record.result_data["s0"].cost = 0.1
    record.result_data["s1"].cost = 0.2
    record.result_data["s1"].error = "boom"
    transitions.aggregate(record)
    assert record.cost == 0.3
    assert record.status == TaskState.ERROR
    assert record.message == "2 of 3 sections failed: s1: boom; s2: failed"
    assert record.progress == 100
    assert record.trace[-1].status == "error"


# -- ends -----------------------------------------------------------------------------------


def test_fail_closes_only_unfinished_sections() -> None:
    record = _record(
        SectionState.COMPLETED, SectionState.RUNNING, SectionState.PENDING, SectionState.ERROR
    )
    record.result_data["s3"].error = "earlier"
    transitions.fail(record, "Task failed: x")
    states = {n: (s.status, s.error) for n, s in record.result_data.items()}
    assert states == {
        "s0": (SectionState.COMPLETED, ""),
        "s1": (SectionState.ERROR, "not run"),
        "s2": (SectionState.ERROR, "not run"),
        "s3": (SectionState.ERROR, "earlier"),
    }
    assert record.status == TaskState.ERROR
    assert record.message == "Task failed: x"
    assert record.progress == 100
    assert record.completed_at == record.updated_at


def test_fail_keeps_an_error_a_running_section_had() -> None:
    record = _record(SectionState.RUNNING)
    record.result_data["s0"].error = "partial"
    transitions.fail(record, "m")
    assert record.result_data["s0"].error == "partial"


def test_cancel_closes_only_unfinished_sections() -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING, SectionState.ERROR)
    transitions.cancel(record)
    assert [s.status for s in record.result_data.values()] == [
        SectionState.COMPLETED,
        SectionState.CANCELLED,
        SectionState.ERROR,
    ]
    assert record.status == TaskState.CANCELLED
    assert record.message == "Task cancelled"
    assert record.progress == 100
    assert record.completed_at is not None
    assert record.trace[-1].step == "Cancel"
    assert record.result_data["s1"].error == ""


def test_dead_letter_keeps_finished_sections() -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING)
    record.result_data["s0"].conv_id = "c0"
    record.result_data["s0"].response = "kept"
    transitions.dead_letter(record, "too many deaths")
    assert record.result_data["s0"].status == SectionState.COMPLETED
    assert record.result_data["s0"].response == "kept"
    assert record.result_data["s1"].status == SectionState.ERROR
    assert record.result_data["s1"].error == "not finished: task dead-lettered"
    assert record.status == TaskState.ERROR
    assert record.message == "Dead-lettered: too many deaths"
    assert record.conv_id == "c0, "
    assert record.trace[-1].step == "Dead letter"
    assert record.trace[-1].detail == "too many deaths"


# -- retry and takeover ---------------------------------------------------------------------


def test_retry_resets_only_sections_that_did_not_complete() -> None:
    record = _record(
        SectionState.COMPLETED,
        SectionState.ERROR,
        SectionState.CANCELLED,
        owner="old",
        takeovers=2,
    )
    record.result_data["s0"].response = "kept"
    record.result_data["s1"].error = "boom"
    record.result_data["s1"].dispatches = 4
    transitions.fail(record, "x")

    reopened = transitions.retry(record, "r2")

    assert reopened == ["s1", "s2"]
    assert record.result_data["s0"].status == SectionState.COMPLETED
    assert record.result_data["s0"].response == "kept"
    assert record.result_data["s1"] == _section(1)
    assert record.result_data["s2"] == _section(2)
    assert record.status == TaskState.PENDING
    assert record.progress == 0
    assert record.completed_at is None
    assert record.owner == "r2"
    assert record.takeovers == 0
    assert record.message == "Retrying 2 failed sections: s1, s2"
    assert record.trace[-1].step == "Retry"
    assert record.trace[-1].detail == "s1, s2"


def test_retry_keeps_the_platform_ids_a_failed_section_reached() -> None:
    record = _record(SectionState.ERROR, SectionState.ERROR)
    reached = {"conv_id": "c0", "message_id": "m0", "conv_asset_id": "a0", "worker": "w:1"}
    for name, value in reached.items():
        setattr(record.result_data["s0"], name, value)
    record.result_data["s0"].error = "gave up after 4 dispatches"
    transitions.fail(record, "x")

    transitions.retry(record, "r2")

    assert record.result_data["s0"] == _section(0, **reached)  # resumed, not prompted again
    assert record.result_data["s1"] == _section(1)


def test_retry_keeps_the_conversation_a_failed_section_continues() -> None:
    record = _record(SectionState.ERROR, SectionState.COMPLETED)
    continued = Continued(task_id="task_1", section="document_section", conv_id="c9", asset_id="a9")
    record.result_data["s0"].continues = continued
    transitions.fail(record, "x")

    transitions.retry(record, "r2")

    assert record.result_data["s0"].continues == continued  # the chat goes on in its conversation


def test_take_over_increments_and_records_the_previous_owner() -> None:
    record = _record(SectionState.RUNNING, owner="dead", takeovers=1)
    assert transitions.take_over(record, "me", max_takeovers=2)
    assert record.owner == "me"
    assert record.takeovers == 2
    assert record.status == TaskState.PENDING
    assert record.trace[-1].step == "Takeover"
    assert record.trace[-1].detail == "dead"


def test_take_over_without_owner_names_none() -> None:
    record = _record(SectionState.RUNNING)
    assert transitions.take_over(record, "me", max_takeovers=1)
    assert record.trace[-1].detail == "none"


def test_take_over_past_max_dead_letters() -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING, owner="dead", takeovers=2)
    assert not transitions.take_over(record, "me", max_takeovers=2)
    assert record.takeovers == 3
    assert record.owner == "me"
    assert record.status == TaskState.ERROR
    assert record.message == "Dead-lettered: its owner died 3 times (last: dead)"
    assert record.result_data["s0"].status == SectionState.COMPLETED


# -- helpers --------------------------------------------------------------------------------


def test_trace_entry_duration_and_defaults() -> None:
    entry = transitions.trace_entry("step", "completed", started=time.monotonic() - 0.25)
    assert 250 <= entry.duration_ms < 5000
    assert entry.at  # stamped now
    plain = transitions.trace_entry("step", "error", detail="d", at="2026-01-01T00:00:00.000000")
    assert (plain.duration_ms, plain.detail, plain.at) == (0, "d", "2026-01-01T00:00:00.000000")


def test_elapsed_seconds_to_completion_or_now() -> None:
    record = _record(SectionState.COMPLETED, completed_at="2026-01-01T00:00:02.500000")
    assert transitions.elapsed_seconds(record) == 2.5
    running = _record(SectionState.RUNNING)
    running.created_at = "2020-01-01T00:00:00.000000"
    assert transitions.elapsed_seconds(running) > 3600 * 24 * 365  # still running, years on


# -- the sealed password --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "kept"),
    [
        (transitions.cancel, False),
        (lambda r: transitions.fail(r, "boom"), True),
        (lambda r: transitions.dead_letter(r, "owners died"), True),
    ],
    ids=["cancelled", "failed", "dead-lettered"],
)
def test_an_ended_task_keeps_its_seal_only_when_it_may_be_retried(
    end: Callable[[TaskRecord], object], kept: bool
) -> None:
    record = _record(SectionState.COMPLETED, SectionState.RUNNING, password_sealed="sealed")

    end(record)

    assert record.status.terminal
    assert (record.password_sealed == "sealed") is kept
    assert (record.status == TaskState.ERROR) is kept


def test_the_last_section_completing_clears_the_seal_and_failing_keeps_it() -> None:
    done = _record(SectionState.COMPLETED, SectionState.RUNNING, password_sealed="sealed")
    transitions.finish_section(done, "s1", _ok(), dispatches=1, started=time.monotonic())
    failed = _record(SectionState.COMPLETED, SectionState.RUNNING, password_sealed="sealed")
    transitions.finish_section(
        failed, "s1", Outcome.failed("boom"), dispatches=1, started=time.monotonic()
    )

    assert (done.status, done.password_sealed) == (TaskState.COMPLETED, "")
    assert (failed.status, failed.password_sealed) == (TaskState.ERROR, "sealed")


def test_the_password_outlives_its_task_only_after_the_window() -> None:
    record = _record(SectionState.ERROR, password_sealed="sealed")
    transitions.fail(record, "boom")
    ended = parse_iso(record.completed_at or "")

    assert not transitions.password_outlived(record, ended + timedelta(seconds=60), 60)
    assert transitions.password_outlived(record, ended + timedelta(seconds=61), 60)
    transitions.forget_password(record)
    assert not transitions.password_outlived(record, ended + timedelta(seconds=61), 60)
    running = _record(SectionState.RUNNING, password_sealed="sealed")
    assert not transitions.password_outlived(running, ended + timedelta(days=9), 60)


def test_retry_without_a_seal_is_refused() -> None:
    record = _record(SectionState.ERROR, password_sealed="sealed")
    transitions.fail(record, "boom")
    transitions.forget_password(record)

    with pytest.raises(WrongState, match="the password is no longer kept; submit the task again"):
        transitions.retry(record, "r1")
    assert record.status == TaskState.ERROR
