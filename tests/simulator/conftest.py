"""Fixtures for the simulator tests: real simulators on loopback, one event loop per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from simulator.settings import SimulatorSettings

ASSET = "c7b75809-063a-4f9c-80a8-496e88ed4894"
OTHER_ASSET = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"
GENAI = "/magicplatform/v1/genai/conversation"


@dataclass
class Sim:
    """A running simulator and an HTTP client pointed at it."""

    server: SimulatorServer
    http: httpx.AsyncClient

    async def token(self, tenant: str = "acme", user: str = "alice", pw: str = "pw") -> str:
        answer = await self.http.get(f"/accesstoken/{tenant}", auth=(user, pw))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    async def stats(self) -> dict[str, Any]:
        answer = await self.http.get("/_sim/stats")
        assert answer.status_code == 200
        return dict(answer.json())

    async def configure(self, **changes: Any) -> dict[str, Any]:
        answer = await self.http.patch("/_sim/config", json=changes)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def configure_asset(self, asset: str, **knobs: Any) -> dict[str, Any]:
        """Patches one asset's knobs; returns the whole config."""
        return await self.configure(assets={asset: knobs})

    async def create(self, token: str, asset: str = ASSET) -> httpx.Response:
        return await self.http.post(
            f"{GENAI}/create",
            json={"conversation_name": "AI Insights", "asset_version_id": asset},
            headers={"Authorization": f"Bearer {token}"},
        )

    async def prompt(self, token: str, conv_id: str, message: str) -> httpx.Response:
        return await self.http.post(
            f"{GENAI}/addmessage/stream",
            json={"conversation_id": conv_id, "message": message},
            headers={"Authorization": f"Bearer {token}"},
        )

    async def poll(self, token: str, conv_id: str, message_id: str) -> httpx.Response:
        return await self.http.get(
            f"{GENAI}/response/{conv_id}/{message_id}",
            headers={"Authorization": f"Bearer {token}"},
        )


StartSimulator = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Factory: starts a simulator with the given settings; all are stopped after the test."""
    started: list[Sim] = []

    async def start(wall_clock: Callable[[], datetime] | None = None, **overrides: Any) -> Sim:
        values: dict[str, Any] = {
            "port": 0,
            "latency_median_s": 0.02,
            "latency_sigma": 0.0,
            "seed": 7,
        }
        values.update(overrides)
        settings = SimulatorSettings(**values)
        server = (
            SimulatorServer(settings, wall_clock=wall_clock)
            if wall_clock
            else SimulatorServer(settings)
        )
        url = await server.start()
        sim = Sim(server, httpx.AsyncClient(base_url=url, timeout=5))
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.http.aclose()
        await sim.server.stop()


@pytest.fixture
async def sim(start_simulator: StartSimulator) -> Sim:
    """A simulator with default behaviour and short latency."""
    return await start_simulator()
