"""The orchestrator's view of ``config.json``: the one model every service shares lives in
:mod:`common.platform_config` (sections and their fallback chains, assets, tenants); the
orchestrator reads it at start-up and a bad file stops it, naming the problem."""

from __future__ import annotations

from common.platform_config import (
    ConfigError,
    PlatformConfig,
    SectionConfig,
    load_config,
)

# The orchestrator's historical name for the whole file.
SectionsConfig = PlatformConfig

__all__ = ["ConfigError", "PlatformConfig", "SectionConfig", "SectionsConfig", "load_config"]
