"""The credential keyring (sealing, rotation, binding) and the orchestrator's token cache."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.credentials import Sealer, SealError, TokenCache, decode_key, new_key
from orchestrator.worker_client import AccessToken, Credentials
from tests.orchestrator.fakes import FakeClock

TASK = "task_20260101000000_00abcdef"
OTHER_TASK = "task_20260101000000_00fedcba"
PASSWORD = "hunter2-Pa55word"


def _key() -> bytes:
    return decode_key(new_key())


def test_a_seal_opens_only_for_its_task_tenant_and_user() -> None:
    sealer = Sealer({"k2": _key()})
    sealed = sealer.seal(PASSWORD, TASK, "acme", "alice")

    assert sealed.startswith("aesgcm2:k2:")
    assert PASSWORD not in sealed
    assert sealer.open(sealed, TASK, "acme", "alice") == PASSWORD
    for moved in [(OTHER_TASK, "acme", "alice"), (TASK, "other", "alice"), (TASK, "acme", "bob")]:
        with pytest.raises(SealError, match="does not open"):
            sealer.open(sealed, *moved)
    # The parts are length-prefixed: shifting characters between them changes the binding.
    with pytest.raises(SealError):
        sealer.open(sealed, TASK, "acm", "ealice")


def test_rotation_seals_with_the_new_key_and_the_old_one_still_opens() -> None:
    old, new = _key(), _key()
    before = Sealer({"k1": old})
    sealed_before = before.seal(PASSWORD, TASK, "acme", "alice")

    rotated = Sealer({"k2": new, "k1": old})
    sealed_after = rotated.seal(PASSWORD, OTHER_TASK, "acme", "alice")

    assert rotated.key_ids == ["k2", "k1"]
    assert sealed_after.startswith("aesgcm2:k2:")
    assert rotated.open(sealed_before, TASK, "acme", "alice") == PASSWORD
    assert rotated.open(sealed_after, OTHER_TASK, "acme", "alice") == PASSWORD
    with pytest.raises(SealError, match="'k2', which is not in the keyring"):
        before.open(sealed_after, OTHER_TASK, "acme", "alice")
    with pytest.raises(SealError, match="'k1', which is not in the keyring"):
        Sealer({"k2": new}).open(sealed_before, TASK, "acme", "alice")


def test_a_key_id_pointing_at_the_wrong_key_does_not_open() -> None:
    sealed = Sealer({"k1": _key()}).seal(PASSWORD, TASK, "acme", "alice")
    with pytest.raises(SealError, match="does not open"):
        Sealer({"k1": _key()}).open(sealed, TASK, "acme", "alice")


def test_a_bare_key_is_the_ring_k1() -> None:
    key = _key()
    sealed = Sealer(key).seal(PASSWORD, TASK, "acme", "alice")
    assert sealed.startswith("aesgcm2:k1:")
    assert Sealer({"k2": _key(), "k1": key}).open(sealed, TASK, "acme", "alice") == PASSWORD


def _legacy_seal(key: bytes, secret: str, task_id: str) -> str:
    """A seal as the first format wrote it: no key id, bound to the task id only."""
    nonce = os.urandom(12)
    blob = nonce + AESGCM(key).encrypt(nonce, secret.encode(), task_id.encode())
    return "aesgcm1:" + base64.urlsafe_b64encode(blob).decode()


def test_seals_of_the_first_format_still_open_with_a_key_of_the_ring() -> None:
    legacy = _key()
    sealed = _legacy_seal(legacy, PASSWORD, TASK)
    ring = Sealer({"k2": _key(), "k1": legacy})

    assert ring.open(sealed, TASK, "acme", "alice") == PASSWORD
    with pytest.raises(SealError):
        ring.open(sealed, OTHER_TASK, "acme", "alice")
    with pytest.raises(SealError):
        Sealer({"k2": _key()}).open(sealed, TASK, "acme", "alice")


@pytest.mark.parametrize("sealed", ["", "plain", "aesgcm2:k1", "aesgcm2:k1:!!!", "aesgcm9:x"])
def test_damaged_or_foreign_values_are_seal_errors(sealed: str) -> None:
    with pytest.raises(SealError):
        Sealer({"k1": _key()}).open(sealed, TASK, "acme", "alice")


def test_bad_keys_and_key_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        decode_key("c2hvcnQ=")
    with pytest.raises(ValueError, match="key id"):
        Sealer({"k:1": _key()})
    with pytest.raises(ValueError, match="empty"):
        Sealer({})


def _creds(password: str = PASSWORD, username: str = "u@example.com") -> Credentials:
    return Credentials(tenant="t", username=username, password=password)


def test_a_token_is_reused_while_it_has_more_than_half_its_life() -> None:
    clock = FakeClock()
    tokens = TokenCache(clock=clock.monotonic)
    assert tokens.get(_creds()) is None
    tokens.put(_creds(), AccessToken("tok-1", 100))

    clock.advance(40)
    reused = tokens.get(_creds())
    clock.advance(11)

    assert reused is not None and reused.value == "tok-1"
    assert reused.expires_in == pytest.approx(60)  # what is left, not the original life
    assert tokens.get(_creds()) is None


def test_another_password_or_user_gets_no_token() -> None:
    tokens = TokenCache()
    tokens.put(_creds(), AccessToken("tok-1", 100))
    assert tokens.get(_creds(password=PASSWORD.upper())) is None
    assert tokens.get(_creds(username="v@example.com")) is None


def test_a_rejected_token_is_forgotten_but_not_its_replacement() -> None:
    tokens = TokenCache()
    tokens.put(_creds(), AccessToken("tok-1", 100))
    tokens.discard(_creds(), "tok-0")  # an older token: the cache holds a newer one
    assert tokens.get(_creds()) is not None
    tokens.discard(_creds(), "tok-1")
    assert tokens.get(_creds()) is None


def test_the_cache_keeps_no_password_and_stays_bounded() -> None:
    tokens = TokenCache()
    for n in range(TokenCache._PRUNE_AT + 10):
        tokens.put(_creds(password=f"{PASSWORD}{n}"), AccessToken(f"tok-{n}", 100))
    assert len(tokens) <= TokenCache._PRUNE_AT
    assert PASSWORD not in repr(vars(tokens))
    assert "tok-" not in repr(AccessToken("tok-1", 1))
