"""Settings shared by every service. Each service subclasses :class:`ServiceSettings` with its
own env prefix and builds it once in ``main()``; a bad value stops start-up naming the variable."""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    """Host, port and logging of one gRPC service."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json in containers.")
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="Seconds in-flight calls get to finish on SIGTERM."
    )


def load_settings(cls: type[S]) -> S:
    """Builds settings from the environment, or exits with a message naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [
            f"  {prefix}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        sys.exit(f"invalid settings for {cls.__name__}:\n" + "\n".join(lines))
