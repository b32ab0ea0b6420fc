"""Simulator settings from the environment and ``python -m simulator`` as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import pytest

from common.settings import load_settings
from simulator.settings import SimulatorSettings
from tests.helpers import assert_eventually, free_port


def test_settings_read_sim_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_FAIL_ASSETS", "a-1, b-2")
    monkeypatch.setenv("SIM_THROTTLE_RATE", "0.25")
    monkeypatch.setenv("SIM_PASSWORD", "hunter2")

    settings = SimulatorSettings()

    assert settings.fail_assets == ["a-1", "b-2"]
    assert settings.throttle_rate == 0.25
    assert "hunter2" not in repr(settings)
    assert settings.tunables().fail_assets == ["a-1", "b-2"]


def test_asset_knobs_read_sim_assets_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_ASSETS", '{"a-1": {"down": true, "throttle_rate": 0.5}}')

    tunables = SimulatorSettings().tunables()

    assert tunables.assets["a-1"].down is True
    assert tunables.for_asset("a-1").throttle_rate == 0.5
    assert tunables.for_asset("b-2").throttle_rate == 0.0


def test_a_bad_setting_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_ERROR_RATE", "2")

    with pytest.raises(SystemExit) as stopped:
        load_settings(SimulatorSettings)

    assert "SIM_ERROR_RATE" in str(stopped.value.code)


async def test_python_m_simulator_serves_until_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "SIM_PORT": str(port), "SIM_PASSWORD": "do-not-log-me"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def probe() -> int:
                try:
                    return (await http.get("/_sim/health")).status_code
                except httpx.TransportError:
                    return 0

            await assert_eventually(probe, lambda code: code == 200, what="simulator up")
            refused = await http.get("/accesstoken/acme", auth=("alice", "wrong"))
            accepted = await http.get("/accesstoken/acme", auth=("alice", "do-not-log-me"))
        assert refused.status_code == 401
        assert accepted.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    log = stderr.decode()
    assert process.returncode == 0
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "do-not-log-me" not in log
    assert accepted.json()["access_token"] not in log
