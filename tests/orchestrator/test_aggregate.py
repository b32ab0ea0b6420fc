from orchestrator.models import SectionResult, SectionState, TaskRecord, TaskState
from orchestrator.transitions import aggregate, elapsed_seconds
from orchestrator.transitions import cancel as mark_cancelled
from tests.orchestrator.factories import task_record


def _record(**sections: SectionResult) -> TaskRecord:
    return task_record(
        task_id="task_20251230182721_01e09305",
        data=[{}] * len(sections),
        result_data=sections,
        created_at="2025-12-30T18:27:21.000000",
        updated_at="2025-12-30T18:27:21.000000",
    )


def _done(i: int, cost: float, conv: str, msg: str) -> SectionResult:
    return SectionResult(
        status=SectionState.COMPLETED,
        response=f"r{i}",
        cost=cost,
        conv_id=conv,
        message_id=msg,
        record_index=i,
        asset_id="a",
    )


def test_all_sections_completed_joins_ids_in_order_and_sums_cost():
    record = _record(
        portfolio_snapshot=_done(0, 0.0801, "c1", "m1"),
        top_movers=_done(1, 0.24, "c2", "m2"),
        model_and_rebalancing=_done(2, 0.004, "c3", "m3"),
    )
    aggregate(record)
    assert record.status == TaskState.COMPLETED
    assert record.conv_id == "c1, c2, c3"
    assert record.message_id == "m1, m2, m3"
    assert record.cost == 0.3241
    assert record.progress == 100
    assert record.completed_at
    assert record.trace[-1].step == "4. Aggregate"
    assert elapsed_seconds(record) > 0


def test_a_failed_section_makes_the_task_error_and_keeps_the_others():
    failed = SectionResult(
        status=SectionState.ERROR, error="platform answered FAILED", record_index=1, asset_id="a"
    )
    record = _record(portfolio_snapshot=_done(0, 0.1, "c1", "m1"), top_movers=failed)
    aggregate(record)
    assert record.status == TaskState.ERROR
    assert "1 of 2 sections failed" in record.message
    assert "top_movers: platform answered FAILED" in record.message
    assert record.result_data["portfolio_snapshot"].response == "r0"
    assert record.cost == 0.1
    assert record.conv_id == "c1, "  # one position per detected section, empty when none


def test_cancel_marks_unfinished_sections_only():
    record = _record(
        a=_done(0, 0.1, "c1", "m1"),
        b=SectionResult(status=SectionState.RUNNING, record_index=1, asset_id="x"),
    )
    mark_cancelled(record)
    assert record.status == TaskState.CANCELLED
    assert record.result_data["a"].status == SectionState.COMPLETED
    assert record.result_data["b"].status == SectionState.CANCELLED
