"""Settings shared by every service. Each service subclasses :class:`ServiceSettings` with its
own env prefix and builds it once in ``main()``; a bad value stops start-up naming the variable.

A setting may also be read from a second, unprefixed name (the seed's ``S3_BUCKET_NAME``,
``BASE_URL``, ...): its field then carries ``validation_alias=AliasChoices(<prefixed name>,
<other name>)``. pydantic-settings applies no env prefix to a validation alias, so the prefixed
name is spelled out, and first: when both are set, the prefixed one wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    """Host, port, logging, internal TLS and the metrics endpoint of one service."""

    # populate_by_name: code and tests build settings by field name even where the field is
    # read from aliased environment variables.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json in containers.")
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="Seconds in-flight calls get to finish on SIGTERM."
    )
    tls_mode: Literal["mutual", "plaintext"] = Field(
        "mutual",
        description="mutual: every gRPC hop is mutual TLS; plaintext: no encryption and no "
        "caller check (only on a trusted network).",
    )
    tls_dir: Path = Field(
        Path("/run/secrets/tls"),
        description="Holds ca.pem and this service's <role>.pem and <role>-key.pem.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the Prometheus metrics endpoint binds to (0.0.0.0 in a pod, so "
        "the monitoring namespace can scrape it).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics endpoint; 0 turns it off; unset: the "
        "service's own default (common.metrics.DEFAULT_PORTS).",
    )


class GrpcServerSettings(ServiceSettings):
    """What a service serving gRPC adds to :class:`ServiceSettings`."""

    grpc_reflection: bool = Field(
        False, description="Serve gRPC reflection (for grpcurl and the like)."
    )
    max_concurrent_rpcs: int = Field(
        10_000,
        ge=1,
        description="Calls served at once (streams included); more are refused with "
        "RESOURCE_EXHAUSTED.",
    )


def env_names(cls: type[BaseSettings], field: str) -> list[str]:
    """The environment variables ``field`` of ``cls`` is read from, the winning one first."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [choice.upper() for choice in alias.choices if isinstance(choice, str)]
    return [f"{cls.model_config.get('env_prefix', '')}{field}".upper()]


def load_settings(cls: type[S]) -> S:
    """Builds settings from the environment, or exits with a message naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = [f"  {_label(cls, err['loc'])}: {err['msg']}" for err in exc.errors()]
        sys.exit(f"invalid settings for {cls.__name__}:\n" + "\n".join(lines))


def _label(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """Names an error location: the environment variable behind its field (of those the field
    reads, the one that is set), then any position inside the value."""
    if not loc:
        return "(settings together)"  # a model validator's error: several variables at once
    head, rest = str(loc[0]), [str(part) for part in loc[1:]]
    for field in cls.model_fields:
        names = env_names(cls, field)
        if head == field or head.upper() in names:
            set_names = {name.upper() for name in os.environ}
            head = next((name for name in names if name in set_names), names[0])
            break
    return ".".join([head, *rest])
