"""WorkerSettings: the platform URL is read from the seed's BASE_URL too."""

from __future__ import annotations

import os

import pytest

from common.settings import load_settings
from section_worker.settings import WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("WORKER_") or var == "BASE_URL":
            monkeypatch.delenv(var)


def test_base_url_is_read_and_the_prefixed_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().platform_url == "http://127.0.0.1:8100"
    monkeypatch.setenv("BASE_URL", "https://platform.example.com/")
    assert WorkerSettings().platform_url == "https://platform.example.com"
    monkeypatch.setenv("WORKER_PLATFORM_URL", "http://10.0.0.7:8100")
    assert WorkerSettings().platform_url == "http://10.0.0.7:8100"


def test_a_bad_base_url_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_URL", "platform.example.com")
    with pytest.raises(SystemExit) as stopped:
        load_settings(WorkerSettings)
    assert "\n  BASE_URL: " in str(stopped.value.code)
