"""Settings of the platform simulator (env prefix ``SIM_``).

:class:`Tunables` are the knobs a running simulator lets tests change (``PATCH /_sim/config``);
:class:`SimulatorSettings` adds what is fixed at start-up (address, password, seed, bounds).
:class:`AssetKnobs` are one asset's own values of some knobs (``Tunables.assets``), which win
over the global ones for the calls that reach that asset, plus its outage window.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The global knobs an asset may override; AssetKnobs has a field of the same name for each.
ASSET_OVERRIDES = (
    "latency_median_s",
    "latency_sigma",
    "latency_max_s",
    "throttle_rate",
    "error_rate",
    "failure_rate",
    "retry_after_s",
)


class AssetKnobs(BaseModel):
    """One asset's behaviour: overrides of global knobs (None: the global value applies) and
    an outage. The asset is down, answering 503 to every call that touches it, while ``down``
    is true and the time (unix seconds) is within ``[down_from, down_until)``; a missing bound
    leaves that side of the window open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_median_s: float | None = Field(None, ge=0)
    latency_sigma: float | None = Field(None, ge=0, le=5)
    latency_max_s: float | None = Field(None, gt=0)
    throttle_rate: float | None = Field(None, ge=0, le=1)
    error_rate: float | None = Field(None, ge=0, le=1)
    failure_rate: float | None = Field(None, ge=0, le=1)
    retry_after_s: float | None = Field(None, ge=0, le=3600)
    down: bool = False
    down_from: float | None = Field(None, description="Outage start, unix seconds.")
    down_until: float | None = Field(None, description="Outage end, unix seconds.")

    def is_down(self, now: float) -> bool:
        """Whether the asset is out of service at unix time ``now``."""
        return (
            self.down
            and (self.down_from is None or now >= self.down_from)
            and (self.down_until is None or now < self.down_until)
        )


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
    assets: dict[str, AssetKnobs] = Field(
        default_factory=dict,
        description="Per-asset overrides and outages, JSON: asset id -> AssetKnobs.",
    )

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

    def for_asset(self, asset_id: str | None) -> Tunables:
        """The knobs that apply to calls reaching ``asset_id``: its overrides over the rest."""
        own = self.assets.get(asset_id) if asset_id is not None else None
        if own is None:
            return self
        overrides = {name: getattr(own, name) for name in ASSET_OVERRIDES}
        return self.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def patched(self, changes: dict[str, Any]) -> Tunables:
        """These knobs with a partial change applied (raises pydantic.ValidationError when
        bad). Top-level knobs are replaced; ``assets`` is merged like a JSON merge patch
        (RFC 7396): an asset's fields are merged into what it had, a null field drops that
        override, a null asset drops the asset, and ``"assets": null`` drops them all."""
        values = self.model_dump()
        for name, value in changes.items():
            if name == "assets" and isinstance(value, dict):
                values["assets"] = _merge_assets(values["assets"], value)
            elif name == "assets" and value is None:
                values["assets"] = {}
            else:
                values[name] = value
        return Tunables.model_validate(values)


def _merge_assets(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for asset_id, change in patch.items():
        if change is None:
            merged.pop(asset_id, None)
        elif isinstance(change, dict):
            fields = {**merged.get(asset_id, {}), **change}
            merged[asset_id] = {k: v for k, v in fields.items() if v is not None}
        else:
            merged[asset_id] = change  # not an object: validation names it
    return merged


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
