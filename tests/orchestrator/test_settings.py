"""OrchestratorSettings: the default tenant is read from the seed's TENANT_ID too."""

from __future__ import annotations

import os

import pytest

from common.settings import load_settings
from orchestrator.credentials import new_key
from orchestrator.settings import OrchestratorSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("ORCH_") or var == "TENANT_ID":
            monkeypatch.delenv(var)
    monkeypatch.setenv("ORCH_CREDENTIAL_KEY", new_key())


def test_tenant_id_is_read_and_the_prefixed_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OrchestratorSettings().default_tenant == "wealth"
    monkeypatch.setenv("TENANT_ID", "acme")
    assert OrchestratorSettings().default_tenant == "acme"
    monkeypatch.setenv("ORCH_DEFAULT_TENANT", "globex")
    assert OrchestratorSettings().default_tenant == "globex"


def test_the_default_tenant_follows_the_rule_for_a_submissions_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANT_ID", "acme/../other")
    with pytest.raises(SystemExit) as stopped:
        load_settings(OrchestratorSettings)
    assert "\n  TENANT_ID: " in str(stopped.value.code)
