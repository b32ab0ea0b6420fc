"""Sections configuration (``config.json``): which fields identify each report section and how
its jobs run. Validated at start-up; a bad file stops the orchestrator naming the problem."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SectionConfig(BaseModel):
    """One report section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset_id: str = Field(
        min_length=1, max_length=128, description="Platform asset that writes it."
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

    @field_validator("fields")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("identifying fields must be distinct")
        if any(not f.strip() for f in value):
            raise ValueError("identifying fields must not be blank")
        return value


class SectionsConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sections: dict[str, SectionConfig] = Field(min_length=1)

    @field_validator("sections")
    @classmethod
    def _names(cls, value: dict[str, SectionConfig]) -> dict[str, SectionConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"section name {name!r} must be lower_snake_case")
        return value


class ConfigError(Exception):
    """config.json is missing, not JSON, or does not describe valid sections."""


def load_config(path: Path) -> SectionsConfig:
    """Reads and validates ``path``; raises :class:`ConfigError` naming the problem."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return SectionsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
