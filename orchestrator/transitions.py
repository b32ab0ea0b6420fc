"""Every change of state a task record goes through, as plain functions on the record.

Each function takes a record (and what happened) and changes that record, nothing else: no
storage, no clock other than the timestamps it writes, no workers. The pipeline, cancel, retry
and takeover apply them to a copy and persist it; the unit tests call them directly.

A task that ends ``completed`` or ``cancelled`` loses its sealed password at once (nothing can
run it again); one that ends in ``error`` keeps it for the retry window, after which
:func:`forget_password` clears it (:mod:`orchestrator.sweeper`) and :func:`retry` refuses. A
task submitted without a platform login (every section of a kind that calls no platform) has
no password to keep and can be retried as long as it is stored.

Progress follows the user's seed flow (SPEC §5): pending 0, authenticating 10, authenticated 20,
detecting_section 40, processing 50, then the sections share the span up to 95 as they finish,
and a finished task is 100.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any

from common.errors import WrongState
from common.platform_config import progress_text
from common.timeutil import iso, parse_iso, utcnow
from orchestrator.models import (
    AttemptRecord,
    SectionResult,
    SectionState,
    TaskRecord,
    TaskState,
    TraceEntry,
)
from orchestrator.worker_client import Outcome

PROGRESS = {
    TaskState.PENDING: 0,
    TaskState.AUTHENTICATING: 10,
    TaskState.AUTHENTICATED: 20,
    TaskState.DETECTING: 40,
    TaskState.PROCESSING: 50,
}
_SECTIONS_SPAN = (50, 95)
# Why a task whose sealed password was cleared cannot run again.
SEAL_CLEARED = "the password is no longer kept; submit the task again"


def trace_entry(
    step: str, status: str, *, started: float | None = None, detail: str = "", at: str = ""
) -> TraceEntry:
    """A trace entry stamped now; ``started`` (a ``time.monotonic()`` reading) gives its
    duration."""
    duration_ms = int((time.monotonic() - started) * 1000) if started is not None else 0
    return TraceEntry(
        step=step, status=status, at=at or iso(utcnow()), duration_ms=duration_ms, detail=detail
    )


def set_state(record: TaskRecord, state: TaskState, message: str) -> TaskRecord:
    """Moves a running task to ``state`` (one of the pipeline's steps before the end)."""
    record.status = state
    record.progress = PROGRESS.get(state, record.progress)
    record.message = message
    record.updated_at = iso(utcnow())
    return record


def start_section(record: TaskRecord, name: str) -> TaskRecord:
    record.result_data[name].status = SectionState.RUNNING
    return record


def placed(record: TaskRecord, name: str, worker: str) -> TaskRecord:
    """Records that section ``name``'s job is about to run on ``worker`` (not where a takeover
    would look first), so a takeover looks there for a message it may have sent. Nothing
    changes once the section has finished."""
    section = record.result_data[name]
    if not section.status.terminal:
        section.worker = worker
    return record


def prompt_sent(
    record: TaskRecord, name: str, *, conv_id: str, message_id: str, asset_id: str, worker: str
) -> TaskRecord:
    """Records that the platform accepted section ``name``'s prompt as ``message_id`` in
    ``conv_id`` (on ``asset_id``), sent by ``worker``: from now on the section resumes that
    message instead of prompting again. A message replacing another one (the platform said
    the earlier one FAILED or was unknown when it was resumed) is noted in the trace. Nothing
    changes once the section has finished."""
    section = record.result_data[name]
    if section.status.terminal:
        return record
    if section.message_id and section.message_id != message_id:
        record.trace.append(
            trace_entry(
                "Prompt sent again",
                "completed",
                detail=f"{name}: message {section.message_id} will never be answered; "
                f"sent as message {message_id}",
            )
        )
    section.conv_id, section.message_id = conv_id, message_id
    section.conv_asset_id, section.worker = asset_id, worker
    return record


def finish_section(
    record: TaskRecord, name: str, outcome: Outcome, *, dispatches: int, started: float
) -> TaskRecord:
    """Records a section's outcome; the last section to finish also finishes the task."""
    section = record.result_data[name]
    section.status = SectionState.COMPLETED if outcome.success else SectionState.ERROR
    section.response = outcome.response
    section.cost = outcome.cost
    if outcome.conv_id:  # else the ids the section reached stay (a job given up on has none)
        section.conv_id, section.message_id = outcome.conv_id, outcome.message_id
    section.error = outcome.error
    section.files = list(outcome.files)  # the last outcome's only: one result file per section
    section.result = _result_object(outcome.result_json)
    section.dispatches = dispatches
    if outcome.success and outcome.asset_id:
        # A failed section keeps its chain's first asset, so a retry starts the chain over.
        section.asset_id = section.model_used = outcome.asset_id
    section.attempts = [
        AttemptRecord(
            asset_id=a.asset_id,
            outcome=a.outcome,
            reason=a.reason,
            cost=a.cost,
            duration_s=round(a.duration_s, 3),
        )
        for a in outcome.attempts
    ]
    detail = f"cost ${outcome.cost:.4f}" if outcome.success else outcome.error
    if outcome.success and len(outcome.attempts) > 1:
        detail += f"; answered by {outcome.asset_id} after {len(outcome.attempts) - 1} fallback(s)"
    record.trace.append(
        trace_entry(f"3. Section {name}", section.status.value, started=started, detail=detail)
    )
    states = [s.status for s in record.result_data.values()]
    low, high = _SECTIONS_SPAN
    record.progress = low + ((high - low) * sum(s.terminal for s in states)) // len(states)
    record.updated_at = iso(utcnow())
    if all(s.terminal for s in states):
        aggregate(record)
    return record


def _result_object(result_json: str) -> dict[str, Any] | None:
    """A job's structured result as stored: a JSON object, or None (none, or not an object)."""
    if not result_json:
        return None
    try:
        value = json.loads(result_json)
    except ValueError:
        return {"unreadable": result_json[:200]}
    return value if isinstance(value, dict) else {"value": value}


def section_progress(record: TaskRecord, name: str, kind: str, done: int, total: int) -> bool:
    """Shows how far a running section's job got; True when that changed what is shown."""
    section = record.result_data[name]
    text = progress_text(kind, done, total) if total > 0 else ""
    if not text or text == section.progress:
        return False
    section.progress = text
    return True


def _close_unfinished(record: TaskRecord, status: SectionState, error: str = "") -> None:
    """Every section that did not finish ends as ``status`` (keeping an error it had)."""
    for section in record.result_data.values():
        if not section.status.terminal:
            section.status = status
            if error:
                section.error = section.error or error


def _end(record: TaskRecord, status: TaskState, message: str, now: datetime) -> None:
    record.status = status
    record.message = message
    record.progress = 100
    record.updated_at = record.completed_at = iso(now)
    if status != TaskState.ERROR:  # only an error task can run again (retry)
        record.password_sealed = ""


def password_outlived(record: TaskRecord, now: datetime, window_s: float) -> bool:
    """True when ``record`` is an ``error`` task whose retry window is over and that still
    holds its sealed password."""
    if record.status != TaskState.ERROR or not record.password_sealed or not record.completed_at:
        return False
    return (now - parse_iso(record.completed_at)).total_seconds() > window_s


def forget_password(record: TaskRecord) -> TaskRecord:
    """Clears the sealed password of a finished task; a retry is refused from then on."""
    record.password_sealed = ""
    return record


def fail(record: TaskRecord, message: str) -> TaskRecord:
    """Ends the task in error before its sections ran (authentication failed, a bug)."""
    _close_unfinished(record, SectionState.ERROR, "not run")
    _end(record, TaskState.ERROR, message, utcnow())
    return record


def cancel(record: TaskRecord) -> TaskRecord:
    """Ends the task as cancelled; sections that did not finish become cancelled."""
    now = utcnow()
    _close_unfinished(record, SectionState.CANCELLED)
    _end(record, TaskState.CANCELLED, "Task cancelled", now)
    record.trace.append(trace_entry("Cancel", "cancelled", at=iso(now)))
    return record


def dead_letter(record: TaskRecord, reason: str) -> TaskRecord:
    """Ends the task in error for good, keeping the sections that had finished."""
    _close_unfinished(record, SectionState.ERROR, "not finished: task dead-lettered")
    aggregate(record)
    record.message = f"Dead-lettered: {reason}"
    record.trace.append(trace_entry("Dead letter", "error", at=record.updated_at, detail=reason))
    return record


def aggregate(record: TaskRecord) -> TaskRecord:
    """Joins ids, sums cost and sets the final status. The joined ids keep one position per
    detected section, empty for a section that has none, as the user's clients index them."""
    started = time.monotonic()
    sections = record.result_data
    record.conv_id = ", ".join(s.conv_id for s in sections.values())
    record.message_id = ", ".join(s.message_id for s in sections.values())
    record.cost = round(sum(s.cost for s in sections.values()), 6)
    failed = {n: s.error for n, s in sections.items() if s.status != SectionState.COMPLETED}
    if failed:
        reasons = "; ".join(f"{n}: {e or 'failed'}" for n, e in failed.items())
        message = f"{len(failed)} of {len(sections)} sections failed: {reasons}"
        _end(record, TaskState.ERROR, message, utcnow())
    else:
        _end(record, TaskState.COMPLETED, f"All {len(sections)} sections completed", utcnow())
    record.trace.append(
        trace_entry(
            "4. Aggregate",
            "completed" if not failed else "error",
            started=started,
            at=record.updated_at,
            detail=f"cost ${record.cost:.4f}; elapsed {elapsed_seconds(record):.2f}s",
        )
    )
    return record


def retry(record: TaskRecord, owner: str, *, window_s: float = math.inf) -> list[str]:
    """Reopens an ``error`` task on ``owner``: the sections that did not complete start over,
    the completed ones are kept. A section that started over keeps the platform ids it reached
    and the worker it ran on, so it resumes a message the platform accepted rather than pay
    for another. Returns the reopened sections' names. Refused (WrongState) once the task's
    password is no longer kept, or its retry window of ``window_s`` is over."""
    # A task submitted without a platform login (its sections call no platform) keeps none.
    login_gone = not record.password_sealed or password_outlived(record, utcnow(), window_s)
    if record.username and login_gone:
        raise WrongState(f"task {record.task_id} can no longer be retried: {SEAL_CLEARED}")
    failed = [n for n, s in record.result_data.items() if s.status != SectionState.COMPLETED]
    for name in failed:
        old = record.result_data[name]
        record.result_data[name] = SectionResult(
            record_index=old.record_index,
            asset_id=old.asset_id,
            conv_id=old.conv_id,
            message_id=old.message_id,
            conv_asset_id=old.conv_asset_id,
            worker=old.worker,
            continues=old.continues,
        )
    now = iso(utcnow())
    record.status = TaskState.PENDING
    record.progress = 0
    record.message = f"Retrying {len(failed)} failed sections: {', '.join(failed)}"
    record.updated_at = now
    record.completed_at = None
    record.owner = owner
    record.takeovers = 0
    record.trace.append(trace_entry("Retry", "started", at=now, detail=", ".join(failed)))
    return failed


def take_over(record: TaskRecord, owner: str, max_takeovers: int) -> bool:
    """Makes ``owner`` the task's owner, or dead-letters the task when its owners died more than
    ``max_takeovers`` times. True when the task is to run on ``owner``."""
    previous = record.owner or "none"
    record.owner = owner
    record.takeovers += 1
    if record.takeovers > max_takeovers:
        dead_letter(record, f"its owner died {record.takeovers} times (last: {previous})")
        return False
    record.trace.append(trace_entry("Takeover", "completed", detail=previous))
    return True


def elapsed_seconds(record: TaskRecord) -> float:
    """Seconds from creation to completion, or to now while the task runs."""
    end = parse_iso(record.completed_at) if record.completed_at else utcnow()
    return round((end - parse_iso(record.created_at)).total_seconds(), 3)
