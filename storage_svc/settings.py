"""Settings of storage_svc, read from ``STORAGE_*`` environment variables; bucket, prefix and
region also from the seed's ``S3_BUCKET_NAME``, ``S3_PREFIX`` and ``AWS_REGION`` (the
``STORAGE_*`` name wins when both are set).

AWS credentials are deliberately *not* settings: the S3 client finds them through the standard
AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, web identity, instance
or task role), so they never pass through our code or our logs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import GrpcServerSettings

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageSettings(GrpcServerSettings):
    """Where the task documents live and how hard to try when S3 misbehaves."""

    model_config = SettingsConfigDict(env_prefix="STORAGE_")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")

    # The seed's names are read too (common.settings: the prefixed name wins over them).
    s3_bucket: str = Field(
        "wealth-ai-tasks",
        validation_alias=AliasChoices("STORAGE_S3_BUCKET", "S3_BUCKET_NAME"),
        description="Bucket holding the task documents.",
    )
    s3_prefix: str = Field(
        "tasks/",
        validation_alias=AliasChoices("STORAGE_S3_PREFIX", "S3_PREFIX"),
        description="Key prefix of the task documents; ends in '/'.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (moto, MinIO); unset means AWS S3."
    )
    s3_region: str = Field(
        "us-east-1",
        min_length=1,
        validation_alias=AliasChoices("STORAGE_S3_REGION", "AWS_REGION"),
        description="Region of the bucket.",
    )
    create_bucket: bool = Field(True, description="Create the bucket at start-up if missing.")
    task_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        # The plain name is the platform-wide knob; the prefixed one wins if both are set.
        validation_alias=AliasChoices("STORAGE_TASK_RETENTION_DAYS", "TASK_RETENTION_DAYS"),
        description="Days after which the lifecycle rule expires task objects.",
    )

    s3_max_attempts: int = Field(
        4, ge=1, le=20, description="Attempts per S3 call before reporting S3 unavailable."
    )
    s3_backoff_base_s: float = Field(
        0.1, gt=0, description="First retry waits up to this long; doubles each attempt."
    )
    s3_backoff_max_s: float = Field(2.0, gt=0, description="Longest wait between attempts.")
    s3_connect_timeout_s: float = Field(3.0, gt=0, description="TCP/TLS connect timeout.")
    s3_read_timeout_s: float = Field(10.0, gt=0, description="Timeout waiting for S3 to answer.")
    s3_max_connections: int = Field(50, ge=1, description="Connection pool size of the client.")

    list_scan_limit: int = Field(
        200, ge=1, le=10_000, description="Most documents one filtered list call reads."
    )
    list_get_concurrency: int = Field(
        16, ge=1, le=256, description="Most document reads one list call runs at once."
    )
    startup_timeout_s: float = Field(
        120.0,
        ge=0,
        description="How long start-up keeps retrying an unreachable S3 before exiting.",
    )

    files_prefix: str = Field(
        "files/", description="Key prefix of the files; ends in '/', apart from s3_prefix."
    )
    file_retention_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 3650,
        # The plain name is the platform-wide knob; the prefixed one wins if both are set.
        validation_alias=AliasChoices("STORAGE_FILE_RETENTION_HOURS", "FILE_RETENTION_HOURS"),
        description="Hours a file lives; the lifecycle backstop rounds up to whole days.",
    )
    file_max_bytes: int = Field(
        1024**3, ge=1, description="Largest file an upload may write (bigger: OUT_OF_RANGE)."
    )
    file_part_bytes: int = Field(
        8 * 1024**2,
        # S3 refuses parts under 5 MiB (but the last); one part is what an upload buffers.
        ge=5 * 1024**2,
        le=64 * 1024**2,
        description="Size of each multipart upload part: the memory one upload holds.",
    )
    file_download_chunk_bytes: int = Field(
        1024**2, ge=4096, le=1024**2, description="Most bytes per Download message."
    )
    presign_default_s: int = Field(
        900, ge=1, le=604_800, description="Validity of a pre-signed URL when none is asked."
    )
    presign_max_s: int = Field(
        3600,
        ge=1,
        # SigV4 pre-signed URLs cannot outlive seven days.
        le=604_800,
        description="Longest validity a pre-signed URL may be given.",
    )
    file_sweep_interval_s: float = Field(
        600.0, gt=0, description="Seconds between two sweeps deleting expired files."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to PUT/GET files straight to S3 (a JSON list); "
        "empty keeps the bucket without a CORS rule of ours.",
    )

    @model_validator(mode="after")
    def _consistent_files(self) -> Self:
        if self.files_prefix.startswith(self.s3_prefix) or self.s3_prefix.startswith(
            self.files_prefix
        ):
            raise ValueError(
                f"STORAGE_FILES_PREFIX {self.files_prefix!r} and STORAGE_S3_PREFIX "
                f"{self.s3_prefix!r} must not contain one another"
            )
        # S3 takes at most 10,000 parts per multipart upload.
        if self.file_max_bytes > 10_000 * self.file_part_bytes:
            raise ValueError(
                "STORAGE_FILE_MAX_BYTES exceeds 10,000 parts of STORAGE_FILE_PART_BYTES"
            )
        if self.presign_default_s > self.presign_max_s:
            raise ValueError("STORAGE_PRESIGN_DEFAULT_S exceeds STORAGE_PRESIGN_MAX_S")
        return self

    @field_validator("s3_bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        if not _BUCKET_NAME.match(value) or ".." in value:
            raise ValueError(
                "must be a valid S3 bucket name: 3-63 characters of lowercase letters, digits, "
                "'.' and '-', starting and ending with a letter or digit"
            )
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return value
        raise ValueError("must be a valid S3 bucket name, not an IP address")

    @field_validator("s3_prefix", "files_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not value.endswith("/") or value.startswith("/") or "//" in value:
            raise ValueError("must end with '/' and neither start with '/' nor contain '//'")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _empty_endpoint_is_aws(cls, value: str | None) -> str | None:
        return value or None
