"""What a task run does with the user's secrets, over in-memory storage and scripted workers:
one authentication per task, jobs carrying the token and never the password, an expired token
renewed once for the whole task with the section resuming where it stopped, the token reused by
the user's next task, and the seal gone once the task cannot run again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from common.errors import WrongState
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.models import SectionState, TaskState
from orchestrator.worker_client import JobRejected, Outcome, Progress, SectionJob, job_message
from tests.orchestrator.fakes import Step, expired
from tests.orchestrator.test_service import ALICE, RECORDS, SECTIONS, World
from tests.orchestrator.test_service import world as world  # the fixture

FIRST_TOKEN = "token-127.0.0.1:7001-1"
SECOND_TOKEN = "token-127.0.0.1:7001-2"


def _ok(job: SectionJob) -> Outcome:
    return Outcome(
        success=True,
        response=f"report {job.section}",
        cost=0.01,
        conv_id=f"c-{job.section}",
        message_id=f"m-{job.section}",
    )


async def test_jobs_carry_the_token_and_never_the_password(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "Pa55-secret", "", RECORDS)
    done = await world.finished(record.task_id)

    assert done.status == TaskState.COMPLETED
    assert len(world.worker.authentications) == 1
    assert sorted(job.section for job in world.worker.runs) == sorted(SECTIONS)
    for job in world.worker.runs:
        sent = job_message(job)
        assert sent.access_token == FIRST_TOKEN
        assert (sent.tenant, sent.username) == (ALICE.tenant, "alice")
        assert "Pa55-secret" not in str(sent) and "Pa55-secret" not in repr(job)
        assert FIRST_TOKEN not in repr(job)
    assert world.storage.record(record.task_id).password_sealed == ""
    assert FIRST_TOKEN not in world.storage.record(record.task_id).model_dump_json()


async def test_the_next_task_of_the_same_user_reuses_the_token(world: World) -> None:
    first, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(first.task_id)
    second, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(second.task_id)
    other, _ = await world.orch.submit(ALICE, "alice", "changed-pw", "", RECORDS)
    await world.finished(other.task_id)

    assert done.status == TaskState.COMPLETED
    assert done.trace[1].detail == "token of an earlier task"
    assert [c.password for c in world.worker.authentications] == ["pw", "changed-pw"]
    assert {j.access_token for j in world.worker.runs if j.task_id == second.task_id} == {
        FIRST_TOKEN
    }


async def test_an_expired_token_is_renewed_once_and_the_sections_resume(world: World) -> None:
    all_sent = asyncio.Event()
    first_runs: list[str] = []

    def plan(job: SectionJob) -> Sequence[Step]:
        if job.access_token != FIRST_TOKEN:
            return [_ok(job)]
        # The token expires once every section has sent its prompt: all of them meet it.
        first_runs.append(job.section)
        if len(first_runs) == len(SECTIONS):
            all_sent.set()
        return [
            Progress(conv_id=f"c-{job.section}", message_id=f"m-{job.section}"),
            all_sent,
            expired(f"c-{job.section}", f"m-{job.section}"),
        ]

    world.worker.plan = plan
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(record.task_id)

    assert done.status == TaskState.COMPLETED, done.message
    assert world.worker.refreshes == [False, True]  # one renewal for the whole task
    resumed = [job for job in world.worker.runs if job.access_token == SECOND_TOKEN]
    assert sorted(job.section for job in resumed) == sorted(SECTIONS)
    for job in resumed:
        assert (job.resume_conv_id, job.resume_message_id) == (
            f"c-{job.section}",
            f"m-{job.section}",
        )
    assert all(s.dispatches == 2 for s in done.result_data.values())


async def test_a_token_expiring_again_fails_only_that_section(world: World) -> None:
    def plan(job: SectionJob) -> Sequence[Step]:
        if job.section == "top_movers":
            return [expired("c-t", "m-t")]
        return [_ok(job)]

    world.worker.plan = plan
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(record.task_id)

    assert done.status == TaskState.ERROR
    section = done.result_data["top_movers"]
    assert section.status == SectionState.ERROR
    assert section.error.startswith(
        "the platform rejected the access token and it expired again after a renewal"
    )
    assert (section.conv_id, section.message_id) == ("c-t", "m-t")
    assert world.worker.refreshes == [False, True]
    # An error task may be retried: the stored seal is kept.
    assert world.storage.record(done.task_id).password_sealed


async def test_a_failed_renewal_fails_the_section_with_its_reason(world: World) -> None:
    def plan(job: SectionJob) -> Sequence[Step]:
        if job.section == "top_movers":
            world.worker.auth_error = JobRejected(world.worker.address, "password changed")
            return [expired()]
        return [_ok(job)]

    world.worker.plan = plan
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(record.task_id)

    error = done.result_data["top_movers"].error
    assert error.startswith(
        "the platform rejected the access token and authenticating again failed: password changed"
    )


async def test_cancel_clears_the_seal(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    world.orch.runs[record.task_id]  # running
    cancelled = await world.orch.cancel(record.task_id, ALICE)

    assert cancelled.status == TaskState.CANCELLED
    assert world.storage.record(record.task_id).password_sealed == ""


async def test_a_task_without_its_seal_is_not_retried_and_never_runs(world: World) -> None:
    world.failing = {"top_movers"}
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    done = await world.finished(record.task_id)
    assert done.status == TaskState.ERROR and world.storage.record(done.task_id).password_sealed
    stored = world.storage.record(record.task_id)
    stored.password_sealed = ""  # as the sweeper leaves it after the retry window
    world.storage.put_record(stored)
    runs = len(world.worker.runs)

    with pytest.raises(WrongState, match="the password is no longer kept; submit the task again"):
        await world.orch.retry(record.task_id, ALICE)
    assert len(world.worker.runs) == runs
    assert world.storage.record(record.task_id).status == TaskState.ERROR


async def test_a_run_of_a_record_without_a_seal_ends_in_error_at_once(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)
    stored = world.storage.record(record.task_id)
    stored.status, stored.password_sealed, stored.completed_at = TaskState.PENDING, "", None
    version = world.storage.put_record(stored)

    world.orch._launch(stored, version)
    done = await world.finished(record.task_id)

    assert done.status == TaskState.ERROR
    assert done.message == "Task failed: the password is no longer kept; submit the task again"
    assert len(world.worker.authentications) == 1  # the first run's only


async def test_a_seal_under_a_key_the_ring_lacks_fails_the_task_naming_it(world: World) -> None:
    record, _ = await world.orch.submit(ALICE, "alice", "pw", "", RECORDS)
    await world.finished(record.task_id)
    stored = world.storage.record(record.task_id)
    stored.status, stored.completed_at = TaskState.PENDING, None
    foreign = Sealer({"k9": decode_key(new_key())})
    stored.password_sealed = foreign.seal("pw", record.task_id, "wealth", "alice")
    version = world.storage.put_record(stored)

    world.orch._launch(stored, version)
    done = await world.finished(record.task_id)

    assert done.status == TaskState.ERROR
    assert done.message == (
        "Task failed: the sealed password cannot be opened: "
        "sealed under key id 'k9', which is not in the keyring"
    )
