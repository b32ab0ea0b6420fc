"""Orchestrator settings (env prefix ``ORCH_``; the default tenant is also read from the seed's
``TENANT_ID``, ``ORCH_DEFAULT_TENANT`` winning when both are set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import GrpcServerSettings
from orchestrator.credentials import decode_key


class OrchestratorSettings(GrpcServerSettings):
    """Where the orchestrator listens, what it talks to, and its limits."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore", frozen=True)

    port: int = Field(50071, ge=0, le=65535)
    storage_target: str = Field("127.0.0.1:50051", description="storage_svc host:port.")
    worker_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1:50061"],
        description="Section workers: host:port entries (comma-separated or a JSON list); a "
        "host resolving to several addresses counts as one worker per address.",
    )
    credential_key: SecretStr = Field(
        description="urlsafe base64 of 32 bytes; seals users' passwords in stored tasks. "
        "Every replica must share it."
    )
    config_path: Path = Field(Path("config.json"), description="Sections configuration.")
    default_tenant: str = Field(
        "wealth",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",  # what a submission's own tenant may be
        # The seed's name too; the prefixed one wins when both are set.
        validation_alias=AliasChoices("ORCH_DEFAULT_TENANT", "TENANT_ID"),
        description="Platform tenant of a submission that names none.",
    )
    max_records: int = Field(20, ge=1, le=1000, description="Records per task.")
    max_record_bytes: int = Field(256 * 1024, ge=64, description="Size of one record as JSON.")
    worker_refresh_s: float = Field(2.0, gt=0, description="How often worker loads are read.")
    auth_wait_s: float = Field(
        60.0, gt=0, description="How long authentication waits for a reachable worker."
    )
    replica_name: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Readable prefix of this replica's id (default: the host name); a random "
        "suffix keeps every process's id unique.",
    )
    advertise_address: str = Field(
        "",
        description="host:port other replicas reach this one at (default: host and port); "
        "set it to the pod address when binding 0.0.0.0.",
    )
    lease_ttl_s: float = Field(
        10.0, gt=0, description="A replica whose lease is not renewed for this long is dead."
    )
    lease_renew_s: float = Field(
        3.0, gt=0, description="How often the lease is renewed and orphaned tasks are sought."
    )
    max_takeovers: int = Field(
        3, ge=0, description="Takeovers after which a task is dead-lettered (ends in error)."
    )

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> OrchestratorSettings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_renew_s must be at most half of lease_ttl_s")
        return self

    @field_validator("worker_targets", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("worker_targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one worker target is required")
        for target in value:
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{target!r} is not host:port")
        return value

    @field_validator("credential_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        decode_key(value.get_secret_value())
        return value
