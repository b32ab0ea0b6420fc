"""Settings of the section worker (env prefix ``WORKER_``; the platform URL is also read from
the seed's ``BASE_URL``, ``WORKER_PLATFORM_URL`` winning when both are set)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import GrpcServerSettings


class WorkerSettings(GrpcServerSettings):
    """Address, capacity, platform client and polling of one worker replica."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", frozen=True)

    port: int = Field(50061, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    platform_url: str = Field(
        "http://127.0.0.1:8100",
        # The seed's name too; the prefixed one wins when both are set.
        validation_alias=AliasChoices("WORKER_PLATFORM_URL", "BASE_URL"),
        description="Base URL of the platform.",
    )
    max_concurrent_jobs: int = Field(16, ge=1, description="Jobs run at once; more are refused.")
    job_timeout_s: float = Field(120.0, gt=0, description="Longest a job may take by default.")
    max_job_timeout_s: float = Field(
        900.0, gt=0, description="Longest a job may take whatever it asks for (clamped to it)."
    )
    config_path: Path = Field(
        Path("config.json"),
        description="The sections configuration: jobs for assets it does not name are refused.",
    )
    request_timeout_s: float = Field(10.0, gt=0, description="Longest one platform call may take.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of one platform call.")
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay (doubles each time).")
    backoff_max_s: float = Field(8.0, gt=0, description="Longest computed retry delay.")
    retry_after_max_s: float = Field(30.0, ge=0, description="Longest Retry-After honoured.")
    poll_initial_s: float = Field(0.2, gt=0, description="Wait before the first poll.")
    poll_factor: float = Field(1.5, ge=1, description="Growth of the wait between polls.")
    poll_max_s: float = Field(
        2.0, gt=0, description="Longest wait between polls until an asset's latencies are known."
    )
    poll_window: int = Field(
        200, ge=10, le=100_000, description="Answers per asset the poll plan is learned from."
    )
    poll_min_samples: int = Field(
        20, ge=4, description="Answers of an asset needed before its poll plan is learned."
    )
    token_margin_s: float = Field(
        30.0, ge=0, description="Refresh a token this long before expiry."
    )
    storage_target: str = Field(
        "127.0.0.1:50051",
        min_length=1,
        description="storage_svc, where a job's files are read and its result files stored.",
    )
    prompt_file_max_bytes: int = Field(
        262_144, ge=1, description="Largest text file a prompt may carry in place of its reference."
    )
    prompt_files_max_total_bytes: int = Field(
        1_048_576, ge=1, description="Most bytes of files one prompt may carry in all."
    )
    http_max_connections: int = Field(100, ge=1, description="Pooled connections to the platform.")
    http_max_keepalive: int = Field(100, ge=0, description="Idle connections kept open.")

    @field_validator("platform_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def known_assets(self) -> frozenset[str]:
        """Every asset id the sections configuration names (a section's own, and any in its
        ``assets`` list); ValueError naming the file when it cannot be read."""
        try:
            config = json.loads(self.config_path.read_text())
            sections = config["sections"].values()
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"cannot read asset ids from {self.config_path}: {exc}") from exc
        found: set[str] = set()
        for section in sections:
            if isinstance(section, dict):
                found.update(a for a in [section.get("asset_id")] if isinstance(a, str))
                found.update(a for a in section.get("assets", []) if isinstance(a, str))
        if not found:
            raise ValueError(f"{self.config_path} names no asset")
        return frozenset(found)

    @model_validator(mode="after")
    def _check_ranges(self) -> WorkerSettings:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError("backoff_base_s must not exceed backoff_max_s")
        if self.poll_initial_s > self.poll_max_s:
            raise ValueError("poll_initial_s must not exceed poll_max_s")
        return self
