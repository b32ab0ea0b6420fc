"""The orchestrator's memory of credentials a worker verified: the same ones skip the round
trip while fresh; other ones, and stale ones, do not; no password is kept."""

from __future__ import annotations

import time

import pytest

from orchestrator.credentials import VerifiedCredentials
from orchestrator.worker_client import Credentials

PASSWORD = "s3cret-pass"


def _creds(password: str = PASSWORD, username: str = "u@example.com") -> Credentials:
    return Credentials(tenant="t", username=username, password=password)


def test_verified_credentials_are_fresh_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    verified = VerifiedCredentials()
    assert not verified.fresh(_creds())
    verified.add(_creds(), valid_s=60)
    assert verified.fresh(_creds())
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert not verified.fresh(_creds())


def test_another_password_or_user_is_not_verified() -> None:
    verified = VerifiedCredentials()
    verified.add(_creds(), valid_s=60)
    assert not verified.fresh(_creds(password=PASSWORD.upper()))
    assert not verified.fresh(_creds(username="v@example.com"))


def test_no_password_is_kept_and_expired_entries_are_dropped() -> None:
    verified = VerifiedCredentials()
    verified.add(_creds(), valid_s=0)
    for n in range(VerifiedCredentials._PRUNE_AT):
        verified.add(_creds(password=f"p{n}"), valid_s=60)
    assert len(verified._until) <= VerifiedCredentials._PRUNE_AT
    assert not any(PASSWORD.encode() in key for key in verified._until)
