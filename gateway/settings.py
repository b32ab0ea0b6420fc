"""Gateway settings (env prefix ``GATEWAY_``; the default tenant is also read from the seed's
``TENANT_ID``, ``GATEWAY_DEFAULT_TENANT`` winning when both are set)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the gateway listens, which orchestrator and storage it talks to, how callers sign in,
    and how large a request may be."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    orchestrator_target: str = Field(
        "127.0.0.1:50071",
        description="Orchestrator replicas: host:port, dns:///name:port or "
        "ipv4:ip:port,ip:port; calls are spread round-robin over them.",
    )
    storage_target: str = Field(
        "127.0.0.1:50051",
        description="storage_svc replicas (its FileService), in the same forms as "
        "orchestrator_target.",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Largest request body but a file upload's; larger ones get 413.",
    )
    header_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest a request's headers may take, from the connection's opening or "
        "the request's first byte; a connection whose headers take longer is closed.",
    )
    body_idle_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait for the next bytes of a request body, a file upload's "
        "included; a body that stalls longer is answered 408 and its upload is cancelled.",
    )
    file_max_bytes: int = Field(
        1024**3,
        ge=1,
        description="Largest file POST /files and POST /files/presign accept; larger ones get "
        "413 (storage_svc's own STORAGE_FILE_MAX_BYTES applies too).",
    )
    max_submits_in_flight: int = Field(
        8,
        ge=1,
        description="Submissions one gateway takes in at once; past that a submission is "
        "answered 429 with Retry-After: 1 at once instead of queueing behind the others.",
    )
    prism_document_max_bytes: int = Field(
        50 * 1024 * 1024,
        ge=1,
        description="Largest document POST /upload (AI-Prism) accepts; larger ones get 413.",
    )
    prism_outline_wait_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="How long POST /upload waits for the document's sections before answering "
        "without them (then poll GET /task_status/{task_id}).",
    )
    call_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Deadline of each orchestrator call, and of each storage call but the file "
        "streams.",
    )
    auth: Literal["keys", "open"] = Field(
        "keys",
        description="keys: every call but /ping and the docs needs an API key. open: calls "
        "without one run as the one anonymous principal (compatibility only).",
    )
    admin_key: SecretStr | None = Field(
        None,
        min_length=32,
        description="The bootstrap admin key (any text of 32+ characters): authenticates as "
        "the admin principal without storage. Unset: only keys created through /admin/keys.",
    )
    default_tenant: str = Field(
        "wealth",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        validation_alias=AliasChoices("GATEWAY_DEFAULT_TENANT", "TENANT_ID"),
        description="Tenant of the bootstrap admin and of the anonymous principal.",
    )
    auth_cache_ttl_s: float = Field(
        10.0,
        gt=0,
        le=15,
        description="How long a resolved API key is trusted without asking again; bounds how "
        "long a revoked key keeps working on another replica.",
    )
    auth_refusal_ttl_s: float = Field(
        2.0, ge=0, le=15, description="How long a refused API key is refused without asking."
    )
    config_path: Path = Field(
        Path("config.json"),
        description="The sections configuration: the API schema names the fields that identify "
        "each section.",
    )
    max_concurrency: int = Field(
        2000, ge=1, description="Connections and requests served at once; more are answered 503."
    )
    events_per_principal: int = Field(
        20, ge=1, description="Event streams (GET /task/{id}/events) one principal may hold open."
    )
    events_per_task: int = Field(
        50, ge=1, description="Event streams open on one task, whoever holds them."
    )
    events_max_lifetime_s: float = Field(
        3600.0, gt=0, description="Longest an event stream stays open; the client reconnects."
    )
