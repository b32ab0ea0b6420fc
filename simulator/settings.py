"""Settings of the platform simulator (env prefix ``SIM_``).

:class:`Tunables` are the knobs a running simulator lets tests change (``PATCH /_sim/config``);
:class:`SimulatorSettings` adds what is fixed at start-up (address, password, seed, bounds).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Tunables(BaseModel):
    """How the simulated platform behaves; every field may change while it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_median_s: float = Field(0.2, ge=0, description="Median time until an answer.")
    latency_sigma: float = Field(0.5, ge=0, le=5, description="Log-normal sigma of latency.")
    latency_max_s: float = Field(45.0, gt=0, description="Longest time until an answer.")
    throttle_rate: float = Field(0.0, ge=0, le=1, description="Share of genai calls given 429.")
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of genai calls given 503.")
    failure_rate: float = Field(0.0, ge=0, le=1, description="Share of answers ending FAILED.")
    fail_assets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Assets whose answers always end FAILED."
    )
    retry_after_s: float = Field(1.0, ge=0, le=3600, description="Retry-After sent with 429.")
    cost_min: float = Field(
        0.004, ge=0, description="Cheapest answer (per row of a transform), US dollars."
    )
    cost_max: float = Field(
        0.24, ge=0, description="Dearest answer (per row of a transform), US dollars."
    )
    token_ttl_s: float = Field(3600.0, gt=0, description="Lifetime of an access token.")
    throttle_next: int = Field(0, ge=0, description="Answer the next N genai calls with 429.")
    error_next: int = Field(0, ge=0, description="Answer the next N genai calls with 503.")

    @field_validator("fail_assets", mode="before")
    @classmethod
    def _split_assets(cls, value: object) -> object:
        # From the environment the list comes as "a,b,c".
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> Tunables:
        if self.cost_min > self.cost_max:
            raise ValueError("cost_min must not exceed cost_max")
        return self


TUNABLE_FIELDS = frozenset(Tunables.model_fields)


class SimulatorSettings(BaseSettings, Tunables):
    """Everything the simulator is started with."""

    model_config = SettingsConfigDict(env_prefix="SIM_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8100, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    password: SecretStr | None = Field(
        None, description="When set, the only password the token call accepts."
    )
    seed: int | None = Field(None, description="Seed of the latency/fault RNG.")
    message_retention_s: float = Field(
        600.0, gt=0, description="How long a finished answer stays pollable."
    )
    max_messages: int = Field(100_000, ge=1, description="Messages kept at most.")
    max_conversations: int = Field(100_000, ge=1, description="Conversations kept at most.")
    access_log: bool = Field(False, description="Log every request line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    def tunables(self) -> Tunables:
        """The start-up values of the runtime knobs."""
        return Tunables.model_validate(self.model_dump(include=set(TUNABLE_FIELDS)))
