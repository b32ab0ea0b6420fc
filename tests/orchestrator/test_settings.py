"""OrchestratorSettings: the default tenant is read from the seed's TENANT_ID too; the
credential keyring and its compatibility with a single key."""

from __future__ import annotations

import json
import os

import pytest

from common.settings import load_settings
from orchestrator.credentials import decode_key, new_key
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


def test_the_single_key_is_the_ring_k1() -> None:
    key = os.environ["ORCH_CREDENTIAL_KEY"]
    assert OrchestratorSettings().keyring() == {"k1": decode_key(key)}


@pytest.mark.parametrize("form", ["list", "json"])
def test_a_keyring_seals_with_its_first_key_or_the_one_named(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.delenv("ORCH_CREDENTIAL_KEY")
    k2, k3 = new_key(), new_key()
    text = f"k3:{k3}, k2:{k2}" if form == "list" else json.dumps({"k3": k3, "k2": k2})
    monkeypatch.setenv("ORCH_CREDENTIAL_KEYS", text)
    assert list(OrchestratorSettings().keyring()) == ["k3", "k2"]
    monkeypatch.setenv("ORCH_CREDENTIAL_KEY_ID", "k2")
    assert OrchestratorSettings().keyring() == {"k2": decode_key(k2), "k3": decode_key(k3)}


def test_the_single_key_joins_a_keyring_as_k1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CREDENTIAL_KEYS", f"k2:{new_key()}")
    assert list(OrchestratorSettings().keyring()) == ["k2", "k1"]
    monkeypatch.setenv("ORCH_CREDENTIAL_KEYS", f"k2:{new_key()},k1:{new_key()}")
    with pytest.raises(SystemExit, match="differ"):
        load_settings(OrchestratorSettings)


@pytest.mark.parametrize(
    ("keys", "key_id", "error"),
    [
        ("k2", "", "entries must be id:key"),
        ("k:2:abc", "", "must be urlsafe base64|32 bytes"),
        ("bad id:{key}", "", "key id of entry 1"),
        ("k2:{key},k2:{key}", "", "given twice"),
        ("k2:{key}", "k9", "'k9' is not in the keyring"),
        ("[1]", "", "entries must be id:key"),
        ('{"k2": 1}', "", "must map key ids"),
    ],
)
def test_a_bad_keyring_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, keys: str, key_id: str, error: str
) -> None:
    monkeypatch.setenv("ORCH_CREDENTIAL_KEYS", keys.replace("{key}", new_key()))
    monkeypatch.setenv("ORCH_CREDENTIAL_KEY_ID", key_id)
    with pytest.raises(SystemExit, match=error):
        load_settings(OrchestratorSettings)


def test_no_key_at_all_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CREDENTIAL_KEY")
    with pytest.raises(SystemExit, match="set ORCH_CREDENTIAL_KEYS"):
        load_settings(OrchestratorSettings)


def test_a_bad_key_id_is_refused_without_repeating_what_was_written_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key()
    monkeypatch.setenv("ORCH_CREDENTIAL_KEYS", f"{key}:{new_key()}")  # a key where its id goes
    with pytest.raises(SystemExit) as refused:
        load_settings(OrchestratorSettings)
    said = str(refused.value) + capsys.readouterr().err
    assert "key id of entry 1" in said
    assert key not in said and key[:12] not in said
