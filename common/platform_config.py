"""The platform configuration (``config.json``), read and validated by the orchestrator and by
every section worker at start-up; a bad file stops either with a message naming the problem.

Three parts:

- ``sections``: which record fields identify each report section, how its jobs run, and its
  ordered **fallback chain** of platform assets (``assets``; ``asset_id`` alone is a chain of
  one, and when both are given ``asset_id`` must be the chain's first asset); its job
  **kind** (:data:`KINDS`: an AI conversation about the record by default) and the kind's
  ``options`` (a JSON object the worker validates against the kind's options at start-up); a
  section of a kind that needs no AI platform names no asset. A section that ``continues``
  another continues the conversation of that section of an earlier task: its record names the
  task under :data:`CONTINUE_TASK_ID`, and its job sends the prompt into that conversation, on
  the asset that answered there;
- ``assets``: per platform asset, the limits every replica shares (requests a minute,
  concurrent calls), its cool-down after a 429, the most one section may cost on it (reserved
  from the budget before the call), its circuit breaker and, optionally, a prior of its answer
  latencies (:class:`LatencyPrior`, what workers poll on before they learned the asset's own);
  an asset not listed gets the ``"*"`` entry, or the defaults of :class:`AssetConfig`;
- ``tenants``: per paying tenant (the tenant of the principal who submitted the task), its
  limits and its cost budgets per day, per month and per task, and what a section does when the
  budget is spent (``on_budget``); a tenant not listed gets the ``"*"`` entry.

Money is in US dollars; ``None`` for a budget means no budget.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TENANT = re.compile(r"^(\*|[A-Za-z0-9._-]{1,64})$")
_ASSET = re.compile(r"^(\*|[A-Za-z0-9._:-]{1,128})$")
DEFAULT = "*"
# The record field naming the earlier task whose conversation a record continues (a section
# that `continues` another); read and removed by the orchestrator, never sent to the platform.
CONTINUE_TASK_ID = "continue_task_id"

CONVERSATION = "conversation"
PROFILE_TABLE = "profile_table"
TRANSFORM_TABLE = "transform_table"
OUTLINE_DOCUMENT = "outline_document"
ANALYZE_DOCUMENT = "analyze_document"
# Every job kind: whether its jobs call the AI platform (and so need the user's platform
# credentials and a chain of assets), and how its progress reads in a section's status
# ("chunks 3/10"). The worker's registry (section_worker.kinds) runs them and checks it agrees.
KINDS: dict[str, tuple[bool, str]] = {
    CONVERSATION: (True, "{done}/{total}"),
    PROFILE_TABLE: (False, "profiled {done}%"),  # its done counts percent, of 100
    TRANSFORM_TABLE: (True, "chunks {done}/{total}"),
    OUTLINE_DOCUMENT: (False, "{done}/{total}"),
    ANALYZE_DOCUMENT: (True, "document sections {done}/{total}"),
}


def needs_platform(kind: str) -> bool:
    """Whether jobs of ``kind`` call the AI platform (an unknown kind is assumed to)."""
    return KINDS.get(kind or CONVERSATION, (True, ""))[0]


def progress_text(kind: str, done: int, total: int) -> str:
    """How a job's progress reads in its section's status: ``"chunks 3/10"``."""
    shape = KINDS.get(kind or CONVERSATION, KINDS[CONVERSATION])[1]
    return shape.format(done=done, total=total)


class BreakerConfig(BaseModel):
    """When an asset's circuit breaker opens, and how it closes again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(
        5, ge=1, le=10_000, description="Failures within window_s that open the breaker."
    )
    failure_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of failed calls within window_s that opens it (with min_calls).",
    )
    window_s: float = Field(60.0, gt=0, le=3600, description="The window counts are kept over.")
    min_calls: int = Field(
        10, ge=1, le=100_000, description="Calls within window_s before the ratio counts."
    )
    open_s: float = Field(
        30.0, gt=0, le=3600, description="How long it stays open before half-open probes."
    )
    half_open_probes: int = Field(
        1, ge=1, le=100, description="Calls let through at once while half-open."
    )


class LatencyPrior(BaseModel):
    """What an asset's answer latencies are believed to be before any is measured: log-normal
    with this median and sigma (of the latency's natural log). Workers draw their poll plan
    from it until they have measured ``WORKER_POLL_MIN_SAMPLES`` answers of the asset; each
    measured answer replaces one of that many pseudo-answers (section_worker/polling.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median_s: float = Field(
        gt=0, le=3600, description="Median seconds from the prompt until its answer is ready."
    )
    sigma: float = Field(
        0.5,
        ge=0,
        le=3,
        description="Spread: sigma of the natural log of the latency (0.5: a tenth of the "
        "answers take under 0.53x the median, a tenth over 1.9x).",
    )


class AssetConfig(BaseModel):
    """One platform asset (model): its limits, cool-down, cost ceiling, breaker and latency
    prior."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", max_length=128, description="Readable name (logs, docs).")
    rpm: int = Field(600, ge=1, le=1_000_000, description="Prompts a minute, across every replica.")
    concurrency: int = Field(
        100, ge=1, le=100_000, description="Calls in flight at once, across every replica."
    )
    cooldown_s: float = Field(
        60.0, ge=0, le=3600, description="Pause after a 429 without Retry-After."
    )
    max_cost: float = Field(
        0.25,
        gt=0,
        le=1000,
        description="Most one section may cost on it; reserved from the budget before the call.",
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    latency: LatencyPrior | None = Field(
        None,
        description="Prior of the asset's answer latencies (median_s, sigma): what workers "
        "poll on until they measured the asset's own (WORKER_POLL_MIN_SAMPLES answers, each "
        "replacing one pseudo-answer of the prior). Set it at or below the real median: one "
        "too slow makes early answers wait for the first poll. None: until then they poll "
        "every WORKER_POLL_MAX_S.",
    )


class TenantConfig(BaseModel):
    """One paying tenant: limits across every replica, budgets, and what to do when spent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int = Field(600, ge=1, le=1_000_000, description="Prompts a minute.")
    concurrency: int = Field(200, ge=1, le=100_000, description="Calls in flight at once.")
    budget_day: float | None = Field(None, ge=0, description="US dollars per UTC day.")
    budget_month: float | None = Field(None, ge=0, description="US dollars per UTC month.")
    task_ceiling: float | None = Field(None, ge=0, description="US dollars one task may spend.")
    on_budget: Literal["fail", "wait"] = Field(
        "fail",
        description="A section that would overshoot a budget fails (after trying the rest of "
        "its chain), or waits for reservations to settle or the next day, up to its timeout.",
    )


class SectionConfig(BaseModel):
    """One report section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset_id: str = Field(
        "",
        max_length=128,
        description="Platform asset that writes it (the chain's first when `assets` is given).",
    )
    assets: tuple[str, ...] = Field(
        (), max_length=10, description="Ordered fallback chain of assets."
    )
    fields: tuple[str, ...] = Field(min_length=1, description="Record fields that identify it.")
    description: str = ""
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Longest one job may take.")
    max_dispatches: int = Field(
        4, ge=1, le=20, description="Times a job is sent to a worker before it counts as failed."
    )
    output: Literal["inline", "file"] = Field(
        "inline",
        description="How the answer is delivered: as the result's text, or as a file owned by "
        "the task's principal.",
    )
    kind: Literal[
        "conversation", "profile_table", "transform_table", "outline_document", "analyze_document"
    ] = Field("conversation", description="What a job of the section does (section_worker.kinds).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The kind's options; the worker checks them against the kind at start-up.",
    )
    task_ceiling: float | None = Field(
        None,
        ge=0,
        description="US dollars one task may spend, for jobs of this section: replaces the "
        "tenant's `task_ceiling` (a kind that sends many prompts per job, such as a table "
        "transform, needs more than a report). None: the tenant's.",
    )

    continues: str = Field(
        "",
        description="Section whose conversation a record of this one continues (the record "
        f"names the earlier task in `{CONTINUE_TASK_ID}`); its chain must hold every asset of "
        "that section's chain. Empty: a new conversation.",
    )
    carry: tuple[str, ...] = Field(
        (),
        max_length=20,
        description="With `continues`: fields of the continued record copied into this "
        "record's `context` object (which the record must then carry).",
    )

    @field_validator("fields")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("identifying fields must be distinct")
        if any(not f.strip() for f in value):
            raise ValueError("identifying fields must not be blank")
        return value

    @field_validator("assets")
    @classmethod
    def _chain(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for asset in value:
            if not _ASSET.match(asset) or asset == DEFAULT:
                raise ValueError(f"asset id {asset!r} is not valid")
        if len(set(value)) != len(value):
            raise ValueError("an asset may appear only once in a chain")
        return value

    @model_validator(mode="after")
    def _first(self) -> SectionConfig:
        if not self.needs_platform:
            if self.assets or self.asset_id:
                raise ValueError(f"a section of kind {self.kind} calls no asset; name none")
            return self
        if not self.assets and not self.asset_id:
            raise ValueError("give asset_id or assets (the fallback chain)")
        if self.asset_id and self.assets and self.assets[0] != self.asset_id:
            raise ValueError(
                f"asset_id {self.asset_id!r} must be the first of assets {list(self.assets)}"
            )
        if self.asset_id and not _ASSET.match(self.asset_id):
            raise ValueError(f"asset id {self.asset_id!r} is not valid")
        if not self.asset_id:
            object.__setattr__(self, "asset_id", self.assets[0])
        return self

    @property
    def needs_platform(self) -> bool:
        """Whether the section's jobs call the AI platform."""
        return needs_platform(self.kind)

    @property
    def chain(self) -> tuple[str, ...]:
        """The assets to try, in order (a chain of one when only ``asset_id`` is given; none
        for a kind that needs no platform)."""
        if not self.needs_platform:
            return ()
        return self.assets or (self.asset_id,)


class PlatformConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sections: dict[str, SectionConfig] = Field(min_length=1)
    assets: dict[str, AssetConfig] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)

    @field_validator("sections")
    @classmethod
    def _names(cls, value: dict[str, SectionConfig]) -> dict[str, SectionConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"section name {name!r} must be lower_snake_case")
        return value

    @model_validator(mode="after")
    def _continued_sections(self) -> PlatformConfig:
        for name, section in self.sections.items():
            if section.carry and not section.continues:
                raise ValueError(f"sections.{name}: carry needs continues")
            if not section.continues:
                continue
            continued = self.sections.get(section.continues)
            if continued is None or section.continues == name:
                raise ValueError(
                    f"sections.{name}: continues {section.continues!r}, which is not another "
                    "configured section"
                )
            if continued.continues:
                raise ValueError(f"sections.{name}: continues a section that continues another")
            missing = [a for a in continued.chain if a not in section.chain]
            if missing:
                raise ValueError(
                    f"sections.{name}: its chain must hold every asset {section.continues!r} "
                    f"may answer on; missing {missing}"
                )
            if CONTINUE_TASK_ID in section.fields:
                raise ValueError(f"sections.{name}: {CONTINUE_TASK_ID} cannot identify a section")
        return self

    @field_validator("assets")
    @classmethod
    def _asset_ids(cls, value: dict[str, AssetConfig]) -> dict[str, AssetConfig]:
        for asset in value:
            if not _ASSET.match(asset):
                raise ValueError(f"asset id {asset!r} is not valid")
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for tenant in value:
            if not _TENANT.match(tenant):
                raise ValueError(f"tenant {tenant!r}: 1-64 letters, digits, '.', '_' or '-'")
        return value

    def asset(self, asset_id: str) -> AssetConfig:
        """The settings of ``asset_id``: its own, else the ``"*"`` entry, else the defaults."""
        found = self.assets.get(asset_id) or self.assets.get(DEFAULT)
        return found if found is not None else AssetConfig()

    def tenant(self, tenant: str) -> TenantConfig:
        """The settings of ``tenant``: its own, else the ``"*"`` entry, else the defaults."""
        found = self.tenants.get(tenant) or self.tenants.get(DEFAULT)
        return found if found is not None else TenantConfig()

    def tenant_for(self, tenant: str, section: str) -> TenantConfig:
        """The settings of ``tenant`` for a job of ``section``: the tenant's, with the
        section's ``task_ceiling`` in place of the tenant's when the section sets one."""
        found = self.tenant(tenant)
        own = self.sections.get(section)
        if own is None or own.task_ceiling is None:
            return found
        return found.model_copy(update={"task_ceiling": own.task_ceiling})

    def known_assets(self) -> frozenset[str]:
        """Every asset a section's chain names: the only ones a job may run on."""
        return frozenset(a for section in self.sections.values() for a in section.chain)


class ConfigError(Exception):
    """config.json is missing, not JSON, or does not describe a valid configuration."""


def load_config(path: Path) -> PlatformConfig:
    """Reads and validates ``path``; raises :class:`ConfigError` naming the problem."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
