"""Platform service accounts: the platform login a task runs with when its caller sends none.

AI-Prism's clients send no platform credentials; their tasks authenticate with the account
configured for the submitting principal's tenant (``ORCH_PLATFORM_ACCOUNTS_FILE``, a JSON file
mounted as a secret)::

    {"acme": {"tenant": "wealth", "username": "prism@acme.example", "password": "…"},
     "*":    {"tenant": "wealth", "username": "prism@example.com",  "password": "…"}}

The keys are principals' tenants; ``"*"`` serves every tenant without an entry of its own. The
file is read and validated once, at start-up; what a problem message names is where it is
(an entry and a field), never a value. An account's password is sealed into the task like a
user's (:mod:`orchestrator.credentials`) and is never logged or stored in clear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from common.errors import InvalidInput

ANY_TENANT = "*"
_PRINCIPAL_TENANT = re.compile(r"^(\*|[A-Za-z0-9._-]{1,64})$")


class PlatformAccount(BaseModel):
    """One platform login: the platform tenant it belongs to, its user and its password."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    username: str = Field(min_length=1, max_length=256, pattern=r"\S")
    password: SecretStr = Field(min_length=1, max_length=1024)


class AccountsError(Exception):
    """The accounts file is missing, not JSON, or not a valid set of accounts."""


class Accounts:
    """Service accounts by principal tenant, with ``"*"`` for every other tenant."""

    def __init__(self, by_tenant: Mapping[str, PlatformAccount] | None = None) -> None:
        self._by_tenant = dict(by_tenant or {})

    def __len__(self) -> int:
        return len(self._by_tenant)

    @property
    def tenants(self) -> list[str]:
        """The principal tenants with an entry, ``"*"`` included when configured."""
        return sorted(self._by_tenant)

    def for_tenant(self, principal_tenant: str) -> PlatformAccount:
        """The account of ``principal_tenant``'s tasks: its own, else ``"*"``'s; else
        :class:`InvalidInput` saying that the task needs credentials."""
        account = self._by_tenant.get(principal_tenant) or self._by_tenant.get(ANY_TENANT)
        if account is None:
            who = f"tenant {principal_tenant!r}" if principal_tenant else "callers without a tenant"
            raise InvalidInput(
                f"username, password: required; no platform service account is configured for {who}"
            )
        return account


def parse_accounts(raw: object) -> Accounts:
    """The accounts of the file's parsed JSON; :class:`AccountsError` naming the problem."""
    if not isinstance(raw, dict):
        raise AccountsError("must be a JSON object of principal tenant → account")
    accounts: dict[str, PlatformAccount] = {}
    for key, entry in raw.items():
        if not _PRINCIPAL_TENANT.match(key):
            # The key is a tenant name, not a secret, but it may be a value pasted in the wrong
            # place: say what is wrong without echoing it.
            raise AccountsError(f"entry {len(accounts) + 1}: the key must be '*' or a tenant name")
        try:
            accounts[key] = PlatformAccount.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}"
                for err in exc.errors(include_input=False)
            )
            raise AccountsError(f"entry {key!r}: {problems}") from None
    if not accounts:
        raise AccountsError("has no account")
    return Accounts(accounts)


def load_accounts(path: Path) -> Accounts:
    """Reads and validates the accounts file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccountsError(f"{path}: file not found") from None
    except OSError as exc:
        raise AccountsError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: the message's own excerpt could hold a password.
        raise AccountsError(f"{path}: not valid JSON (line {exc.lineno})") from None
    try:
        return parse_accounts(raw)
    except AccountsError as exc:
        raise AccountsError(f"{path}: {exc}") from None
