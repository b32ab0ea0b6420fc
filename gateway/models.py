"""REST request and response models, with examples taken from the user's own payloads."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    StrictBool,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from common import file_ids, task_ids
from common.errors import REST_ONLY, ROWS, InvalidInput
from common.json_limits import check_json_shape

EXAMPLE_TASK_ID = "task_20251230182721_01e09305"
EXAMPLE_DATA: list[JsonValue] = [
    {"Market Value": "12000000", "Investment Value": "11000000", "Top Asset": "Equity (65%)"},
    {"top_movers_data": "AAPL +3.2%, MSFT -1.1%, NVDA +5.4%"},
    {
        "total_portfolio_mv": 1000000,
        "customer_risk_profile": "moderate",
        "assets": [{"name": "Equity", "weight": 0.6}, {"name": "Bonds", "weight": 0.4}],
    },
]


class SubmitRequest(BaseModel):
    """A task: the user's platform credentials and the records to write sections from.

    Without ``username`` and ``password`` the task runs on the platform service account of the
    caller's tenant (``ORCH_PLATFORM_ACCOUNTS_FILE``); 422 when none is configured. A task whose
    sections all are of kinds that call no AI platform (``profile_table``) needs neither."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"username": "user@example.com", "password": "xxx", "data": EXAMPLE_DATA}]
        },
    )

    username: str | None = Field(None, min_length=1, max_length=256, pattern=r"\S")
    password: SecretStr | None = Field(None, min_length=1, max_length=1024)
    tenant: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    data: list[Annotated[dict[str, Any], Field(json_schema_extra={"minProperties": 1})]] = Field(
        min_length=1, max_length=20
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> SubmitRequest:
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError(
                "credentials",
                "username and password: send both, or neither to use the platform service "
                "account of your tenant",
            )
        return self

    @field_validator("data")
    @classmethod
    def _records_fit_the_shape_limits(cls, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, record in enumerate(data):
            try:
                check_json_shape(record, f"data[{index}]")
            except InvalidInput as exc:
                raise PydanticCustomError("json_shape", exc.message) from None
        return data


class SubmitResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": EXAMPLE_TASK_ID,
                    "status": "pending",
                    "message": "Task submitted successfully",
                    "created_at": "2025-12-30T18:27:21.828027",
                }
            ]
        }
    )

    task_id: str
    status: str
    message: str
    created_at: str


class SectionStateOut(BaseModel):
    name: str
    status: str
    cost: float
    error: str
    progress: str = Field(
        "", description='How far its running job got in its kind\'s unit ("chunks 3/10").'
    )


class TraceEntryOut(BaseModel):
    step: str
    status: str
    at: str
    duration_ms: int
    detail: str


class StatusResponse(BaseModel):
    task_id: str
    status: str
    progress: int
    message: str
    sections: list[SectionStateOut]
    trace: list[TraceEntryOut]
    created_at: str
    updated_at: str
    completed_at: str | None


class ResultFileOut(BaseModel):
    """A file a section produced; ``url`` downloads it (with the caller's key)."""

    file_id: str
    name: str
    content_type: str
    size: int
    sha256: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return f"/files/{self.file_id}"


class AttemptOut(BaseModel):
    """One step of a section's path through its fallback chain."""

    asset_id: str
    outcome: str = Field(
        description="answered | throttled | failed | rejected (the platform was called), or "
        "breaker_open | cooling_down | limited | budget (the asset was skipped)"
    )
    reason: str = Field(description="Why it did not answer; empty when it did.")
    cost: float = Field(description="US dollars.")
    duration_s: float


class SectionOutcomeOut(BaseModel):
    status: str
    response: str
    cost: float
    conv_id: str
    message_id: str
    error: str
    asset_id: str = Field(
        "", description="The chain's first asset; once completed, the asset that answered."
    )
    model_used: str = Field("", description="The asset that answered; empty unless completed.")
    attempts: list[AttemptOut] = Field(
        default_factory=list, description="The path through the section's fallback chain."
    )
    files: list[ResultFileOut] = Field(
        default_factory=list,
        description='Files the section produced (a section of `"output": "file"` delivers its '
        "answer as one; its `response` is then empty).",
    )
    result: dict[str, Any] | None = Field(
        None,
        description="The structured result of the section's kind (profile_table: the file's "
        "profile; transform_table: the output file and the failed row ranges); null for none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _result_object(cls, data: Any) -> Any:
        """The orchestrator sends the structured result as JSON text (``result_json``)."""
        if isinstance(data, dict) and "result_json" in data:
            data = dict(data)
            text = data.pop("result_json")
            data.setdefault("result", json.loads(text) if text else None)
        return data


class ResultResponse(BaseModel):
    """The user's TaskResultResponse shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": EXAMPLE_TASK_ID,
                    "status": "completed",
                    "section_detected": "portfolio_snapshot, top_movers, model_and_rebalancing",
                    "conv_id": "6953cc347432dcd48967cb34, 6953cc35…, 6953cc36…",
                    "message_id": "6953cc34dd24cce8ffb41f33, …, …",
                    "data": {
                        "portfolio_snapshot": {
                            "status": "completed",
                            "response": '{"UGL": "+", "XIRR_SI vs BM": "positive"}',
                            "cost": 0.0801,
                            "conv_id": "6953cc347432dcd48967cb34",
                            "message_id": "6953cc34dd24cce8ffb41f33",
                            "error": "",
                            "asset_id": "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
                            "model_used": "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
                            "attempts": [
                                {
                                    "asset_id": "c7b75809-063a-4f9c-80a8-496e88ed4894",
                                    "outcome": "throttled",
                                    "reason": "create conversation: the platform throttled "
                                    "the call (429); cooling down for 60s",
                                    "cost": 0.0,
                                    "duration_s": 0.012,
                                },
                                {
                                    "asset_id": "0edec5d8-a1db-44c7-bdf5-3b028be0efc6",
                                    "outcome": "answered",
                                    "reason": "",
                                    "cost": 0.0801,
                                    "duration_s": 21.4,
                                },
                            ],
                        }
                    },
                    "cost": 0.3241,
                    "elapsed_seconds": 47.05,
                    "message": "All 3 sections completed",
                }
            ]
        }
    )

    task_id: str
    status: str
    section_detected: str
    conv_id: str
    message_id: str
    data: dict[str, SectionOutcomeOut]
    cost: float
    elapsed_seconds: float
    message: str


class TaskSummaryOut(BaseModel):
    task_id: str
    status: str
    progress: int
    message: str
    section_detected: str
    cost: float
    created_at: str
    updated_at: str
    owner: str = Field(description="The principal id of the task's owner.")
    tenant: str


class TaskListResponse(BaseModel):
    tasks: list[TaskSummaryOut]
    count: int
    next_page_token: str | None


class StorageHealth(BaseModel):
    status: str = Field(description="healthy | unhealthy | unknown")
    bucket: str = Field("", description="The bucket holding the task documents.")
    cache_size: int = Field(
        0, description="Tasks the orchestrator holds in memory (running or just finished)."
    )


class PingResponse(BaseModel):
    """Health, with the fields the user's monitoring reads."""

    status: str = Field(description="healthy | degraded | unhealthy")
    workers: int = Field(description="Section workers answering now.")
    workers_started: bool
    queue_size: int = Field(description="Section jobs waiting for a worker slot.")
    total_tasks: int = Field(description="Tasks submitted since the orchestrator started.")
    tasks_running: int
    tasks_finished: dict[str, int]
    worker_capacity: int
    sections_running: int
    storage: StorageHealth
    auth: str = Field(
        "keys",
        description="keys: every call needs an API key; open: calls without one run as the "
        "anonymous principal (GATEWAY_AUTH=open, a compatibility mode).",
    )


EXAMPLE_KEY_ID = "3f9a1c0b7d42"


class CreateKeyRequest(BaseModel):
    """Who a new API key is for."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "ann", "tenant": "acme", "role": "client"}]},
    )

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._@-]+$",
        description="Who holds the key; with the tenant, names the principal `<tenant>/<name>` "
        "that owns the tasks it submits (keys of the same name and tenant share them).",
    )
    tenant: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The holder's tenant: a client's tasks run in it.",
    )
    role: Literal["client", "admin"] = Field(
        "client", description="client: its own tasks only; admin: every task and the keys."
    )


class ApiKeyOut(BaseModel):
    """An API key as listed: never the key nor its hash."""

    key_id: str = Field(description="Public id of the key: the key reads `wak_<key_id>_…`.")
    name: str
    tenant: str
    role: str
    principal_id: str = Field(description="The principal the key authenticates as.")
    created_at: str
    revoked_at: str | None = Field(description="When it was revoked; null while it works.")


class CreatedKey(ApiKeyOut):
    """A new API key, the only time the key itself is shown."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": EXAMPLE_KEY_ID,
                    "key": f"wak_{EXAMPLE_KEY_ID}_" + "x" * 43,
                    "name": "ann",
                    "tenant": "acme",
                    "role": "client",
                    "principal_id": "acme/ann",
                    "created_at": "2026-12-01T10:00:00.000000",
                    "revoked_at": None,
                }
            ]
        }
    )

    key: str = Field(description="The key: keep it now, it is stored only as a hash.")


class KeyListResponse(BaseModel):
    keys: list[ApiKeyOut]
    count: int


_CODES = ", ".join(f"`{row.code}` ({row.http_status})" for row in ROWS + REST_ONLY)


class ErrorResponse(BaseModel):
    """Every error: a stable code and a message that says what is wrong."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": "not_found", "detail": f"task {EXAMPLE_TASK_ID} not found"}]
        }
    )

    error: str = Field(
        description=f"Stable error code, one of {_CODES}; an unknown route or method is "
        "`not_found` or `method_not_allowed`."
    )
    detail: str = Field(description="What is wrong, safe to show; never echoes a password.")
    errors: list[dict[str, str]] | None = Field(
        None, description="On `invalid_input` from the gateway: each `field` and its `reason`."
    )


TaskStatusName = Literal[
    "pending",
    "authenticating",
    "authenticated",
    "detecting_section",
    "processing",
    "completed",
    "error",
    "cancelled",
]


class TaskEventOut(BaseModel):
    """One server-sent event of ``GET /task/{id}/events`` (the JSON after ``data: ``)."""

    task_id: str
    status: TaskStatusName
    progress: int = Field(ge=0, le=100)
    message: str
    section: str = Field(description="The section the change concerns; empty for the task.")
    at: str = Field(description="When it happened, ISO 8601 UTC.")


# -- files -------------------------------------------------------------------------------------

FILE_NAME_CHARS = r"[^/\x00-\x1f\x7f]{1,255}"
"""A file name: 1-255 characters, none of them '/' or a control character (storage's rule)."""
CONTENT_TYPE_CHARS = (
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(?:;[ -~]*)?"
)
"""A MIME type ``type/subtype``, parameters allowed, printable ASCII (storage's rule)."""
DEFAULT_CONTENT_TYPE = "application/octet-stream"
EXAMPLE_FILE_ID = "f_9f86d081884c7d659a2feaa0c55ad015_0123456789abcdef01234567"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class FileOut(BaseModel):
    """What the platform knows about one file."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "file_id": EXAMPLE_FILE_ID,
                    "name": "holdings 2025.csv",
                    "size": 1048576,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "content_type": "text/csv",
                    "created_at": "2025-12-30T12:00:00Z",
                    "expires_at": "2025-12-31T12:00:00Z",
                    "temporary": False,
                    "owner": "acme/ann",
                }
            ]
        }
    )

    file_id: str = Field(description="`f_<32 hex>_<24 hex>`.")
    name: str = Field(description="The file's name, as uploaded.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(
        description="SHA-256 of the bytes, 64 lowercase hex digits; empty for a pre-signed "
        "upload that declared none."
    )
    content_type: str
    created_at: str = Field(description="When the upload completed, RFC 3339 UTC.")
    expires_at: str = Field(
        description="When the file expires (created_at + the retention); it is 404 from then."
    )
    temporary: bool = Field(
        description="A temporary input, deleted right after the task that used it ends."
    )
    owner: str = Field(description="The principal id of the file's owner.")


class FileListResponse(BaseModel):
    files: list[FileOut]
    count: int
    next_page_token: str | None = Field(
        description="Pass as page_token for the next page; null on the last one."
    )


class PresignRequest(BaseModel):
    """A file the client will PUT straight to S3."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "holdings.csv", "content_type": "text/csv", "size": 1048576}]
        },
    )

    name: str = Field(pattern=f"^{FILE_NAME_CHARS}$", description="The file's name.")
    content_type: str = Field(
        DEFAULT_CONTENT_TYPE,
        max_length=255,
        pattern=f"^{CONTENT_TYPE_CHARS}$",
        description="MIME type; the PUT must send it as Content-Type.",
    )
    size: int = Field(
        ge=0, description="Exact size in bytes of the PUT (S3 refuses any other length)."
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="SHA-256 of the bytes in hex: signed into the URL, S3 refuses bytes that "
        "do not match, and the file's metadata carries it.",
    )
    temporary: StrictBool = Field(False, description="A temporary input of a task.")
    expires_s: int | None = Field(
        None,
        ge=1,
        le=604_800,
        description="Validity of the URL in seconds (default 15 minutes; capped by storage, "
        "1 hour by default).",
    )

    @field_validator("size", "expires_s", mode="before")
    @classmethod
    def _numbers_are_json_numbers(cls, value: Any) -> Any:
        # JSON Schema's integers: 5 and 5.0, never "5" nor true.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value


class PresignResponse(BaseModel):
    """Where and how to PUT the bytes; then ``POST /files/{file_id}/complete``."""

    file_id: str = Field(description="The id the file will have.")
    url: str = Field(description="The URL to PUT the bytes to.")
    headers: dict[str, str] = Field(
        description="Headers the PUT must carry exactly as given (they are signed)."
    )
    expires_at: str = Field(description="When the URL stops working, RFC 3339 UTC.")


class FileUrlResponse(BaseModel):
    """A URL that downloads the file straight from S3."""

    url: str
    expires_at: str = Field(description="When the URL stops working, RFC 3339 UTC.")


# -- AI-Prism document analysis (gateway.prism) -------------------------------------------------

PRISM_SECTION_NAME_MAX_CHARS = 200
PRISM_CONTENT_MAX_BYTES = 200 * 1024
PRISM_MESSAGE_MAX_BYTES = 20 * 1024


def _utf8_within(value: str, limit: int, what: str) -> str:
    if len(value.encode()) > limit:
        raise PydanticCustomError("too_long", f"{what}: at most {limit} bytes as UTF-8")
    return value


PRISM_DOCUMENT_MAX_SECTIONS = 200


class AnalyzeSectionRequest(BaseModel):
    """One section of a document to get feedback on (paragraphs apart by blank lines): its text
    in ``content``, or the section of that name of a document uploaded with ``POST /upload``
    (``document_id``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "section_name": "Investment risks",
                    "content": "Equities may fall.\n\nBonds carry rate risk.",
                },
                {"section_name": "Investment risks", "document_id": file_ids.EXAMPLE},
            ]
        },
    )

    section_name: str = Field(min_length=1, max_length=PRISM_SECTION_NAME_MAX_CHARS, pattern=r"\S")
    content: str | None = Field(
        None,
        min_length=1,
        max_length=PRISM_CONTENT_MAX_BYTES,
        pattern=r"\S",
        description=f"The section's text, at most {PRISM_CONTENT_MAX_BYTES} bytes as UTF-8.",
    )
    document_id: str | None = Field(
        None,
        pattern=file_ids.PATTERN,
        description="Instead of `content`: an uploaded document (`POST /upload`) whose section "
        "named `section_name` is analysed.",
    )

    @field_validator("content")
    @classmethod
    def _content_fits(cls, value: str | None) -> str | None:
        return None if value is None else _utf8_within(value, PRISM_CONTENT_MAX_BYTES, "content")

    @model_validator(mode="after")
    def _one_source(self) -> AnalyzeSectionRequest:
        if (self.content is None) == (self.document_id is None):
            raise PydanticCustomError(
                "one_source", "give either content or document_id (and not both)"
            )
        return self


class AnalyzeDocumentRequest(BaseModel):
    """An uploaded document to get feedback on, every section (or the ones named) in
    parallel as one task."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"document_id": file_ids.EXAMPLE},
                {"document_id": file_ids.EXAMPLE, "sections": ["Investment risks", "Fees"]},
            ]
        },
    )

    document_id: str = Field(
        pattern=file_ids.PATTERN, description="The document's id from `POST /upload`."
    )
    sections: (
        list[
            Annotated[
                str, Field(min_length=1, max_length=PRISM_SECTION_NAME_MAX_CHARS, pattern=r"\S")
            ]
        ]
        | None
    ) = Field(
        None,
        min_length=1,
        max_length=PRISM_DOCUMENT_MAX_SECTIONS,
        description="The sections to analyse, by name; every section when omitted.",
    )

    @field_validator("sections")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise PydanticCustomError("distinct", "a section is named twice")
        return value


class DocumentOut(BaseModel):
    """An uploaded document as its sections were found."""

    file_id: str
    name: str
    format: Literal["pdf", "docx", "markdown", "text"]
    heading_source: str = Field(
        description="Which rule found the headings: outline, font, styles, markdown, "
        "text_rules, or none (one section)."
    )
    pages: int | None = Field(None, description="A PDF's pages; null for other formats.")
    sections: int


class OutlineSection(BaseModel):
    """One section of an uploaded document."""

    name: str = Field(description="Its heading (unique in the document: a repeat gets ` (2)`).")
    level: int = Field(description="Heading level: 0 title or untitled text, 1 top level, …")
    order: int = Field(description="Place in reading order, from 0.")
    chars: int = Field(description="Characters of its text.")


class AnalysedSection(BaseModel):
    """One section's analysis within a document's."""

    name: str
    level: int
    order: int
    status: Literal["completed", "failed"]
    feedback: list[dict[str, JsonValue]] | None
    error: str = Field(description="Why there is no feedback; empty otherwise.")
    model_used: str
    cost: float


class ChatRequest(BaseModel):
    """A message about an analysed section, continuing that analysis' conversation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"task_id": EXAMPLE_TASK_ID, "message": "Which risk matters most?"}]
        },
    )

    task_id: str = Field(
        pattern=task_ids.PATTERN,
        description="The analysis (`POST /analyze_section`) whose conversation to continue.",
    )
    message: str = Field(
        min_length=1,
        max_length=PRISM_MESSAGE_MAX_BYTES,
        pattern=r"\S",
        description=f"At most {PRISM_MESSAGE_MAX_BYTES} bytes as UTF-8.",
    )

    @field_validator("message")
    @classmethod
    def _message_fits(cls, value: str) -> str:
        return _utf8_within(value, PRISM_MESSAGE_MAX_BYTES, "message")


class QueuedResponse(BaseModel):
    """A task accepted; poll ``GET /task_status/{task_id}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"success": True, "task_id": EXAMPLE_TASK_ID, "status": "queued"}]
        }
    )

    success: bool = True
    task_id: str
    status: Literal["queued"] = "queued"


PrismStatus = Literal["queued", "processing", "completed", "failed"]


class PrismResult(BaseModel):
    """What the platform answered: ``feedback`` for an analysis, ``response`` for a chat."""

    feedback: list[dict[str, JsonValue]] | None = Field(
        None,
        description="An analysis' feedback items, as the platform gives them (id, type, "
        "category, description, suggestion, confidence).",
    )
    response: str | None = Field(None, description="A chat's reply text.")
    document: DocumentOut | None = Field(
        None, description="An uploaded document's outline or analysis: the document."
    )
    outline: list[OutlineSection] | None = Field(
        None, description="An uploaded document's outline (`POST /upload`): its sections."
    )
    sections: list[AnalysedSection] | None = Field(
        None,
        description="An uploaded document's analysis: each analysed section, in reading order "
        "(`feedback` holds the first one's items when one section was asked).",
    )
    model_used: str = Field(description="The asset that answered; empty unless it answered.")
    attempts: list[AttemptOut] = Field(description="The path through the fallback chain.")
    cost: float = Field(description="US dollars.")


class PrismTaskStatus(BaseModel):
    """An AI-Prism task: where it is, and once finished its result or why it failed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "task_id": EXAMPLE_TASK_ID,
                    "status": "completed",
                    "result": {
                        "feedback": [
                            {
                                "id": "fb-1c0e9a7f3b2d",
                                "type": "important",
                                "category": "risk",
                                "description": 'Paragraph 1 of "Investment risks" (3 words) '
                                "begins: Equities may fall.",
                                "suggestion": "Review paragraph 1 for risk.",
                                "confidence": 0.87,
                            }
                        ],
                        "model_used": "3f1c9a2e-6b7d-4e8f-a0b1-c2d3e4f5a6b7",
                        "attempts": [
                            {
                                "asset_id": "3f1c9a2e-6b7d-4e8f-a0b1-c2d3e4f5a6b7",
                                "outcome": "answered",
                                "reason": "",
                                "cost": 0.0412,
                                "duration_s": 6.2,
                            }
                        ],
                        "cost": 0.0412,
                    },
                    "error": None,
                }
            ]
        }
    )

    success: bool = Field(description="False when the task failed.")
    task_id: str
    status: PrismStatus
    result: PrismResult | None = Field(None, description="Once the task finished.")
    error: str | None = Field(None, description="Why it failed; null otherwise.")


class UploadedDocument(BaseModel):
    """A document stored for analysis, and its sections once found."""

    success: bool = Field(description="False when the document cannot be read.")
    document_id: str = Field(
        description="Name it in `POST /analyze_section` or `POST /analyze_document`."
    )
    task_id: str = Field(description="The task that finds its sections.")
    status: PrismStatus
    document: DocumentOut | None = Field(None, description="Once its sections are found.")
    sections: list[OutlineSection] | None = Field(None, description="Once they are found.")
    error: str | None = Field(None, description="Why it cannot be read; null otherwise.")


# -- the dashboard's reads (gateway.dashboard) ---------------------------------------------------


class MeResponse(BaseModel):
    """Who the API key stands for."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"principal_id": "acme/ann", "tenant": "acme", "role": "client", "auth": "keys"}
            ]
        }
    )

    principal_id: str = Field(description="The principal the key authenticates as.")
    tenant: str
    role: Literal["client", "admin"]
    auth: str = Field(description="keys, or open (GATEWAY_AUTH=open, a compatibility mode).")


class TaskInputResponse(BaseModel):
    """A task's input records, as submitted (file references as sent, never their content)."""

    task_id: str
    owner: str = Field(description="The principal id of the task's owner.")
    tenant: str
    data: list[dict[str, Any]]


class AdminStatsResponse(BaseModel):
    """The platform's figures, from the counts its metrics report."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tasks_by_state": {
                        "pending": 0,
                        "authenticating": 0,
                        "authenticated": 0,
                        "detecting_section": 0,
                        "processing": 2,
                    },
                    "tasks_finished": {"completed": 41, "error": 2},
                    "tasks_submitted": 45,
                    "tasks_running": 2,
                    "spend_day": "2026-03-01",
                    "spend_today_usd": {"acme": 1.2841, "wealth": 0.0801},
                    "sections_in_flight": 5,
                    "sections_queued": 0,
                    "worker_capacity": 64,
                    "workers": 2,
                    "workers_ready": 2,
                    "breakers": {"a9fdeb96-cdfa-4a48-9467-bf97a06f8738": "closed"},
                    "replicas_alive": 1,
                    "replicas_counted": 1,
                }
            ]
        }
    )

    tasks_by_state: dict[str, int] = Field(
        description="Unfinished tasks the orchestrators run now, by state."
    )
    tasks_finished: dict[str, int] = Field(
        description="Tasks the orchestrators finished since they started, by final state."
    )
    tasks_submitted: int = Field(description="Tasks submitted since the orchestrators started.")
    tasks_running: int
    spend_day: str = Field(description="The UTC day spend_today_usd counts, YYYY-MM-DD.")
    spend_today_usd: dict[str, float] = Field(
        description="US dollars settled today per paying tenant by the workers answering now, "
        "each since it started."
    )
    sections_in_flight: int = Field(description="Section jobs the workers run now.")
    sections_queued: int = Field(description="Section jobs waiting for a worker slot.")
    worker_capacity: int
    workers: int
    workers_ready: int
    breakers: dict[str, str] = Field(
        description="Circuit breaker per platform asset the workers have called: closed, "
        "half_open or open (the most open any worker reports)."
    )
    replicas_alive: int = Field(description="Orchestrator replicas alive.")
    replicas_counted: int = Field(
        description="Orchestrator replicas whose task figures are summed here (one that does "
        "not answer is left out)."
    )
