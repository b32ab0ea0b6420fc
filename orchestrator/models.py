"""The task document: what the orchestrator keeps for each task, one JSON object in S3.

Field names follow the user's clients (SPEC §5); ``owner`` and ``takeovers`` record which
orchestrator replica runs the task (see :mod:`orchestrator.membership`), ``principal_id`` which
caller it belongs to (:mod:`common.principals`), ``files`` what storage said of the files its
records reference (:mod:`orchestrator.task_files`; metadata only, never content). The user's
password is kept only sealed (``password_sealed``, see :mod:`orchestrator.credentials`) so another
orchestrator can resume the task; the platform token is never part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskState(StrEnum):
    """Task status values, in pipeline order."""

    PENDING = "pending"
    AUTHENTICATING = "authenticating"
    AUTHENTICATED = "authenticated"
    DETECTING = "detecting_section"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.ERROR, TaskState.CANCELLED)


class SectionState(StrEnum):
    """Status of one section of a task."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (SectionState.COMPLETED, SectionState.ERROR, SectionState.CANCELLED)


class FileRef(BaseModel):
    """A file a task reads or a section produced, as storage described it: its metadata and the
    object key of its bytes, never its content."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    file_id: str
    key: str = Field("", description="S3 object key of the bytes; internal, never shown.")
    name: str
    content_type: str
    size: int = Field(ge=0)
    sha256: str = ""
    temporary: bool = Field(False, description="Deleted when the task that used it ends.")


class AttemptRecord(BaseModel):
    """One step of a section's path through its fallback chain (an asset tried or skipped)."""

    model_config = ConfigDict(extra="ignore")

    asset_id: str
    outcome: str = Field(
        description="answered | throttled | failed | rejected | breaker_open | cooling_down | "
        "limited | budget"
    )
    reason: str = ""
    cost: float = 0.0
    duration_s: float = 0.0


class Continued(BaseModel):
    """The conversation a section continues: that of a section of an earlier task of the same
    owner, resolved at submission (:mod:`orchestrator.continuation`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task_id: str
    section: str
    conv_id: str
    asset_id: str = Field(description="The asset that answered there, which holds it.")


class SectionResult(BaseModel):
    """One section's job and its outcome."""

    model_config = ConfigDict(extra="ignore")

    status: SectionState = SectionState.PENDING
    response: str = ""
    cost: float = 0.0
    # Stored as soon as the platform accepts the section's prompt (with the two fields below):
    # a section that has a message id and no answer resumes it, never prompts again.
    conv_id: str = ""
    message_id: str = ""
    error: str = ""
    record_index: int = Field(ge=0)
    asset_id: str = Field(
        description="The chain's first asset; once the section completed, the asset that answered."
    )
    dispatches: int = 0
    model_used: str = Field("", description="The asset that answered; empty unless completed.")
    attempts: list[AttemptRecord] = Field(
        default_factory=list, description="The path through the fallback chain, in order."
    )
    files: list[FileRef] = Field(
        default_factory=list, description="Files the section produced (its last outcome's)."
    )
    result: dict[str, Any] | None = Field(
        None, description="The structured result of its kind (a profile, a transform summary)."
    )
    progress: str = Field(
        "", description='How far its running job got ("chunks 3/10"); in memory while it runs.'
    )
    continues: Continued | None = Field(
        None, description="The conversation its job sends the prompt into, instead of a new one."
    )
    conv_asset_id: str = Field("", description="Asset the conversation conv_id is on.")
    worker: str = Field(
        "", description="Address of the worker that sent the prompt; its next dispatch's first."
    )


class TraceEntry(BaseModel):
    """One step of the task's trace."""

    step: str
    status: str
    at: str
    duration_ms: int = 0
    detail: str = ""


class TaskRecord(BaseModel):
    """The whole task, as stored at ``<prefix><task_id>.json``."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    status: TaskState = TaskState.PENDING
    progress: int = Field(0, ge=0, le=100)
    message: str = ""
    username: str
    tenant: str
    password_sealed: str
    data: list[dict[str, Any]]
    section_detected: str = ""
    conv_id: str = ""
    message_id: str = ""
    result_data: dict[str, SectionResult] = Field(default_factory=dict)
    cost: float = 0.0
    created_at: str
    updated_at: str
    completed_at: str | None = None
    trace: list[TraceEntry] = Field(default_factory=list)
    owner: str = Field("", description="Replica whose lease covers this task while it runs.")
    takeovers: int = Field(0, ge=0, description="Times a replica took the task from a dead one.")
    principal_id: str = Field(
        "", description="The principal who submitted the task and alone (with admins) sees it."
    )
    traceparent: str = Field(
        "",
        description="W3C traceparent of the submission (empty with tracing off): every run of "
        "the task, on whichever replica, continues that trace.",
    )
    principal_tenant: str = Field(
        "",
        description="The tenant of that principal: who pays, and whose limits and budgets the "
        "task's platform calls count against (`tenant` is the platform login's tenant).",
    )
    files: list[FileRef] = Field(
        default_factory=list, description="The files the records reference, as at submission."
    )

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TaskRecord:
        return cls.model_validate_json(raw)


@dataclass(frozen=True)
class TaskEvent:
    """One change of a task, as watchers see it; ``section`` names the section that changed,
    if one did."""

    task_id: str
    status: str
    progress: int
    message: str
    at: str
    section: str = ""

    @classmethod
    def of(cls, record: TaskRecord, section: str = "") -> TaskEvent:
        return cls(
            task_id=record.task_id,
            status=record.status.value,
            progress=record.progress,
            message=record.message,
            at=record.updated_at,
            section=section,
        )

    @property
    def terminal(self) -> bool:
        return TaskState(self.status).terminal
