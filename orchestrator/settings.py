"""Orchestrator settings (env prefix ``ORCH_``; the default tenant is also read from the seed's
``TENANT_ID``, ``ORCH_DEFAULT_TENANT`` winning when both are set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import GrpcServerSettings
from orchestrator.accounts import Accounts, AccountsError, load_accounts
from orchestrator.credentials import KEY_ID, LEGACY_KEY_ID, decode_key


class OrchestratorSettings(GrpcServerSettings):
    """Where the orchestrator listens, what it talks to, and its limits."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore", frozen=True)

    port: int = Field(50071, ge=0, le=65535)
    storage_target: str = Field("127.0.0.1:50051", description="storage_svc host:port.")
    worker_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1:50061"],
        description="Section workers: host:port entries (comma-separated or a JSON list); a "
        "host resolving to several addresses counts as one worker per address.",
    )
    credential_keys: SecretStr | None = Field(
        None,
        description="Keyring sealing users' passwords in stored tasks: `id:key` entries, "
        "comma-separated, or a JSON object {id: key}; each key urlsafe base64 of 32 bytes. The "
        "first seals new tasks (unless ORCH_CREDENTIAL_KEY_ID says otherwise), every one opens. "
        "Every replica must share it.",
    )
    credential_key_id: str = Field(
        "", description="Id of the keyring's key that seals new tasks (default: the first)."
    )
    credential_key: SecretStr | None = Field(
        None,
        description="A single key (urlsafe base64 of 32 bytes), the keyring's key `k1`; with "
        "ORCH_CREDENTIAL_KEYS it joins that ring as `k1`.",
    )
    retry_window_s: float = Field(
        86400.0,
        gt=0,
        description="How long an `error` task keeps its sealed password, so it can be retried.",
    )
    sweep_interval_s: float = Field(
        3600.0,
        gt=0,
        description="How often `error` tasks past the retry window lose their sealed password "
        "(each sweep reads every stored task: see orchestrator/sweeper.py for the S3 cost).",
    )
    delete_temporary_files: bool = Field(
        True,
        description="Delete a task's temporary input files when it ends completed or cancelled "
        "(kept for a retry after an error; they expire anyway).",
    )
    config_path: Path = Field(Path("config.json"), description="Sections configuration.")
    platform_accounts_file: Path | None = Field(
        None,
        description="Platform service accounts (a JSON file mounted as a secret): "
        '`{"<principal tenant>" or "*": {"tenant", "username", "password"}}`. A task '
        "submitted without username and password runs with its principal's tenant's account "
        '(else "*"\'s); unset, such a task is refused. Read once, at start-up.',
    )
    default_tenant: str = Field(
        "wealth",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",  # what a submission's own tenant may be
        # The seed's name too; the prefixed one wins when both are set.
        validation_alias=AliasChoices("ORCH_DEFAULT_TENANT", "TENANT_ID"),
        description="Platform tenant of a submission that names none.",
    )
    max_records: int = Field(20, ge=1, le=1000, description="Records per task.")
    max_record_bytes: int = Field(256 * 1024, ge=64, description="Size of one record as JSON.")
    submit_rate_per_minute: int = Field(
        3000, ge=1, description="Submissions one principal may make a minute, per replica."
    )
    max_in_flight_per_principal: int = Field(
        2000, ge=1, description="Unfinished tasks one principal may have, per replica."
    )
    recent_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Memory for summaries of tasks finished in the last minute (served from "
        "memory); the oldest are dropped past it.",
    )
    worker_refresh_s: float = Field(2.0, gt=0, description="How often worker loads are read.")
    auth_wait_s: float = Field(
        60.0, gt=0, description="How long authentication waits for a reachable worker."
    )
    replica_name: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Readable prefix of this replica's id (default: the host name); a random "
        "suffix keeps every process's id unique.",
    )
    advertise_address: str = Field(
        "",
        description="host:port other replicas reach this one at (default: host and port); "
        "set it to the pod address when binding 0.0.0.0.",
    )
    lease_ttl_s: float = Field(
        10.0, gt=0, description="A replica whose lease is not renewed for this long is dead."
    )
    lease_renew_s: float = Field(
        3.0, gt=0, description="How often the lease is renewed and orphaned tasks are sought."
    )
    max_takeovers: int = Field(
        3, ge=0, description="Takeovers after which a task is dead-lettered (ends in error)."
    )

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> OrchestratorSettings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("lease_renew_s must be at most half of lease_ttl_s")
        return self

    @field_validator("worker_targets", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("worker_targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one worker target is required")
        for target in value:
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{target!r} is not host:port")
        return value

    @field_validator("credential_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value())
        return value

    @field_validator("credential_keys")
    @classmethod
    def _keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_keyring(value.get_secret_value())
        return value

    @field_validator("platform_accounts_file")
    @classmethod
    def _accounts(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_accounts(value)
            except AccountsError as exc:
                raise ValueError(str(exc)) from None
        return value

    def platform_accounts(self) -> Accounts:
        """The service accounts of ``platform_accounts_file`` (none when it is unset)."""
        if self.platform_accounts_file is None:
            return Accounts()
        return load_accounts(self.platform_accounts_file)

    @model_validator(mode="after")
    def _one_keyring(self) -> OrchestratorSettings:
        self.keyring()
        return self

    def keyring(self) -> dict[str, bytes]:
        """Key ids to raw keys, the one that seals first (ValueError when none is set, the
        sealing id is unknown, or ``k1`` is given twice with two values)."""
        ring: dict[str, bytes] = {}
        if self.credential_keys is not None:
            ring = _parse_keyring(self.credential_keys.get_secret_value())
        if self.credential_key is not None:
            legacy = decode_key(self.credential_key.get_secret_value())
            if ring.setdefault(LEGACY_KEY_ID, legacy) != legacy:
                raise ValueError(
                    f"ORCH_CREDENTIAL_KEY and the key {LEGACY_KEY_ID!r} of "
                    "ORCH_CREDENTIAL_KEYS differ"
                )
        if not ring:
            raise ValueError("set ORCH_CREDENTIAL_KEYS (or ORCH_CREDENTIAL_KEY)")
        sealing = self.credential_key_id or next(iter(ring))
        if sealing not in ring:
            raise ValueError(f"ORCH_CREDENTIAL_KEY_ID {sealing!r} is not in the keyring")
        return {sealing: ring[sealing], **ring}


def _parse_keyring(text: str) -> dict[str, bytes]:
    """``id:key,id:key`` or a JSON object ``{"id": "key"}``, in the order given."""
    text = text.strip()
    if text.startswith("{"):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object ({exc.msg})") from None
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise ValueError("must map key ids to base64 keys")
        pairs = list(entries.items())
    else:
        pairs = []
        for entry in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, key = entry.partition(":")
            if not sep:
                raise ValueError("entries must be id:key")
            pairs.append((key_id.strip(), key.strip()))
    ring: dict[str, bytes] = {}
    for position, (key_id, key) in enumerate(pairs, 1):
        if not KEY_ID.match(key_id):
            # Not echoed: a key written where its id belongs would land in the log.
            raise ValueError(f"key id of entry {position}: 1-32 letters, digits, '_' or '-'")
        if key_id in ring:
            raise ValueError(f"key id {key_id!r} is given twice")
        try:
            ring[key_id] = decode_key(key)
        except ValueError as exc:
            raise ValueError(f"key {key_id!r} {exc}") from None
    if not ring:
        raise ValueError("the keyring is empty")
    return ring
