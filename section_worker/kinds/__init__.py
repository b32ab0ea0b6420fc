"""Job kinds the worker runs, one module per kind, and the registry that finds them.

Every section of ``config.json`` names its ``kind`` (:data:`common.platform_config.KINDS`);
a kind is a module with:

- ``NAME``: the kind's name in ``config.json``;
- ``NEEDS_PLATFORM``: whether its jobs call the AI platform (the orchestrator asks the user's
  platform credentials only for tasks with such a section);
- ``Options``: a pydantic model of the section's ``options`` (checked at start-up);
- ``async def run(ctx: KindContext) -> KindOutcome``: the job (:mod:`section_worker.kinds.base`).

:mod:`section_worker.jobs` looks the kind up here for every job. Adding a kind is one module
plus its row here and in :data:`common.platform_config.KINDS` (README: "Adding a kind").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType

from pydantic import BaseModel, ValidationError

from common import platform_config
from common.errors import InvalidInput
from common.platform_config import PlatformConfig
from section_worker.kinds import (
    analyze_document,
    conversation,
    outline_document,
    profile_table,
    transform_table,
)
from section_worker.kinds.base import KindContext, KindError, KindOutcome

__all__ = ["REGISTRY", "Kind", "KindContext", "KindError", "KindOutcome", "check_config", "kind"]


@dataclass(frozen=True)
class Kind:
    """One registered kind."""

    name: str
    needs_platform: bool
    options: type[BaseModel]
    run: Callable[[KindContext], Awaitable[KindOutcome]]

    @classmethod
    def of(cls, module: ModuleType) -> Kind:
        return cls(module.NAME, module.NEEDS_PLATFORM, module.Options, module.run)

    def parse_options(self, options_json: str) -> BaseModel:
        """The options of ``options_json`` ("" for the defaults); InvalidInput naming the
        problem."""
        try:
            raw = json.loads(options_json) if options_json else {}
        except ValueError:
            raise InvalidInput(f"options_json of kind {self.name} is not JSON") from None
        if not isinstance(raw, dict):
            raise InvalidInput(f"options_json of kind {self.name} must be a JSON object")
        try:
            return self.options.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(f"options of kind {self.name}: {_problems(exc)}") from None


REGISTRY: dict[str, Kind] = {
    k.name: k
    for k in map(
        Kind.of,
        (conversation, profile_table, transform_table, outline_document, analyze_document),
    )
}

for _kind in REGISTRY.values():  # one table of kinds for every service: it must agree
    assert platform_config.needs_platform(_kind.name) == _kind.needs_platform, _kind.name
assert set(REGISTRY) == set(platform_config.KINDS), "common.platform_config.KINDS disagrees"


def kind(name: str) -> Kind:
    """The kind named ``name`` ("" is the conversation); InvalidInput when there is none."""
    found = REGISTRY.get(name or platform_config.CONVERSATION)
    if found is None:
        raise InvalidInput(f"kind {name!r} is not one this worker runs ({', '.join(REGISTRY)})")
    return found


def check_config(config: PlatformConfig) -> None:
    """Checks every section's options against its kind; ValueError naming the section."""
    for name, section in config.sections.items():
        try:
            kind(section.kind).parse_options(json.dumps(section.options))
        except InvalidInput as exc:
            raise ValueError(f"sections.{name}.options: {exc.message}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
