"""Gateway settings (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the gateway listens and which orchestrator it talks to."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    orchestrator_target: str = Field(
        "127.0.0.1:50071",
        description="Orchestrator replicas: host:port, dns:///name:port or "
        "ipv4:ip:port,ip:port; calls are spread round-robin over them.",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    call_timeout_s: float = Field(15.0, gt=0, description="Deadline of each orchestrator call.")
