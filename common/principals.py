"""Principals: who calls the platform, as the gateway authenticates them (SPEC §10).

A principal has an id, a tenant and a role. A ``client`` sees and acts on its own tasks and
files only; an ``admin`` on everyone's. The gateway turns an API key into a principal and hands
it to the orchestrator with every call, which enforces ownership itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    id: str
    tenant: str
    role: Role = Role.CLIENT

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN

    def may_see(self, owner: str) -> bool:
        """Whether this principal may see and act on an object owned by ``owner``."""
        return self.admin or (bool(owner) and owner == self.id)


# Who calls when the gateway runs in the explicit open mode (``GATEWAY_AUTH=open``); its tasks
# run in the orchestrator's default tenant.
ANONYMOUS = Principal(id="anonymous", tenant="", role=Role.CLIENT)
