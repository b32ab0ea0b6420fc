"""Settings of the Celery peer (env prefix ``PEER_``), shared by its front and its worker, and
the sealing of the caller's password while it travels through the broker.

The caller's platform password is needed by the worker, which authenticates with it, and
crosses Redis on the way there: the front seals it (Fernet, with ``PEER_SEAL_KEY``, a key the
front and the worker share) and the worker opens it, so neither the broker nor the result
backend ever holds it in clear.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PeerSettings(BaseSettings):
    """Everything the peer's front and worker are started with."""

    model_config = SettingsConfigDict(env_prefix="PEER_", extra="ignore", frozen=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Broker and result backend.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (None: AWS).")
    s3_region: str = "us-east-1"
    bucket: str = Field("peer-tasks", min_length=3, description="Bucket of the task documents.")
    platform_url: str = Field("http://127.0.0.1:8100", description="The AI platform.")
    tenant: str = Field("wealth", min_length=1, description="Platform tenant of every task.")
    config_path: str = Field("config.json", description="The sections (SPEC §4).")
    api_key: SecretStr = Field(description="The key the front's callers send as Bearer.")
    seal_key: SecretStr = Field(description="Fernet key sealing passwords in messages.")
    poll_s: float = Field(2.0, gt=0, description="Seconds between two polls of an answer.")
    section_timeout_s: float = Field(120.0, gt=0, description="Longest wait for one answer.")
    request_timeout_s: float = Field(30.0, gt=0, description="Timeout of one platform call.")
    concurrency: int = Field(300, ge=1, description="Worker threads (tasks at once).")
    ready_port: int = Field(0, ge=0, le=65535, description="Listens here once the worker is up.")


def seal(settings: PeerSettings, secret: str) -> str:
    """``secret`` encrypted and authenticated with the peer's seal key."""
    return Fernet(settings.seal_key.get_secret_value()).encrypt(secret.encode()).decode()


def unseal(settings: PeerSettings, sealed: str) -> str:
    """What :func:`seal` sealed; ValueError when it was not sealed with this key."""
    try:
        return Fernet(settings.seal_key.get_secret_value()).decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("the sealed password does not open with this key") from exc


def new_seal_key() -> str:
    """A fresh seal key (one per benchmark run)."""
    return Fernet.generate_key().decode()
