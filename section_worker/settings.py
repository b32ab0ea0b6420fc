"""Settings of the section worker (env prefix ``WORKER_``; the platform URL is also read from
the seed's ``BASE_URL``, ``WORKER_PLATFORM_URL`` winning when both are set)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.platform_config import ConfigError, PlatformConfig, load_config
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
    max_concurrent_jobs: int = Field(
        2000,
        ge=1,
        description="Jobs held at once, waiting ones included; more are refused. It guards the "
        "worker's memory only: what reaches the platform is shaped by config.json's limits.",
    )
    job_timeout_s: float = Field(120.0, gt=0, description="Longest a job may take by default.")
    max_job_timeout_s: float = Field(
        900.0, gt=0, description="Longest a job may take whatever it asks for (clamped to it)."
    )
    config_path: Path = Field(
        Path("config.json"),
        description="The platform configuration (sections and their chains, assets, tenants): "
        "jobs for assets it does not name are refused.",
    )
    request_timeout_s: float = Field(10.0, gt=0, description="Longest one platform call may take.")
    max_retries: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries of one platform call outside the fallback chain (authentication, "
        "polls of a prompt already sent).",
    )
    chain_retries: int = Field(
        1,
        ge=0,
        le=5,
        description="Retries on 5xx/timeouts of the calls that open an attempt on an asset "
        "(create conversation, send prompt) before the chain moves on; a 429 is never retried "
        "there, it moves the job on at once.",
    )
    fallback_wait_max_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="Longest a job waits on a cooling-down asset, and only when it is the last "
        "of the chain; longer cool-downs are skipped.",
    )
    limit_wait_max_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Longest a job queues for an asset's or tenant's rate or concurrency "
        "before moving on to the next asset (on the chain's last asset it queues until its "
        "timeout).",
    )
    limits_url: str = Field(
        "memory://",
        description="Where limits, leases, cool-downs, breaker states and budgets live: "
        "memory:// (this process only) or redis://host:port/db (shared by every replica).",
    )
    limits_password_file: Path | None = Field(
        None, description="File holding the Redis password (never logged)."
    )
    lease_ttl_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Life of a concurrency lease or budget reservation not renewed: what a "
        "killed worker's holds last. Renewed every third of it while the call runs.",
    )
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay (doubles each time).")
    backoff_max_s: float = Field(8.0, gt=0, description="Longest computed retry delay.")
    retry_after_max_s: float = Field(30.0, ge=0, description="Longest Retry-After honoured.")
    poll_initial_s: float = Field(
        2.0,
        gt=0,
        description="First poll after the prompt while nothing is known of the asset's "
        "latencies (no prior in config.json, fewer than poll_min_samples answers).",
    )
    poll_factor: float = Field(
        1.5,
        ge=1,
        description="Growth of the wait between those polls, up to poll_max_s.",
    )
    poll_max_s: float = Field(
        2.0,
        gt=0,
        description="Longest wait between polls while nothing is known, and past the 97th "
        "percentile of what is; a plan drawn from latencies keeps its median wait within "
        "half of it (a fixed poller's at that interval).",
    )
    poll_window: int = Field(
        200,
        ge=10,
        le=100_000,
        description="Most recent answers per asset the poll plan is learned from (shared "
        "by every worker on one store).",
    )
    poll_min_samples: int = Field(
        20,
        ge=4,
        description="Answers of an asset that replace its prior entirely; without a prior, "
        "answers needed before the plan is learned.",
    )
    poll_share_s: float = Field(
        5.0,
        ge=0.1,
        le=300,
        description="Seconds between a busy worker's exchanges of answer latencies with its "
        "peers through limits_url (one round trip each).",
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
    scratch_dir: Path | None = Field(
        None,
        description="Where a job spools the files it works on (profile_table, transform_table; "
        "up to 500 MB each, removed when the job ends); unset: the system's temporary folder.",
    )
    http_max_connections: int = Field(100, ge=1, description="Pooled connections to the platform.")

    @field_validator("platform_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("limits_url")
    @classmethod
    def _limits_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value == "memory://":
            return value
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be memory:// or redis://host:port/db (rediss:// for TLS)")
        if parts.password is not None:
            # Not echoed: the message would carry the secret into the log.
            raise ValueError("must not hold a password: put it in WORKER_LIMITS_PASSWORD_FILE")
        return value

    def platform_config(self) -> PlatformConfig:
        """The validated configuration file; ValueError naming the file and the problem."""
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    def known_assets(self) -> frozenset[str]:
        """Every asset a section's chain names; ValueError naming the file when it is bad."""
        return self.platform_config().known_assets()

    def limits_password(self) -> str | None:
        """The Redis password from ``limits_password_file`` (None without one)."""
        if self.limits_password_file is None:
            return None
        try:
            return self.limits_password_file.read_text().strip() or None
        except OSError as exc:
            raise ValueError(
                f"WORKER_LIMITS_PASSWORD_FILE {self.limits_password_file}: {exc.strerror}"
            ) from None

    @model_validator(mode="after")
    def _check_ranges(self) -> WorkerSettings:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError("backoff_base_s must not exceed backoff_max_s")
        if self.poll_initial_s > self.poll_max_s:
            raise ValueError("poll_initial_s must not exceed poll_max_s")
        if self.poll_min_samples > self.poll_window:
            raise ValueError("poll_min_samples must not exceed poll_window")
        return self
