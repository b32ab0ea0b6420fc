"""The load generator: clients that use the REST gateway the way real callers do.

Each client submits a task (``POST /task/submit``, no ``Idempotency-Key``: the happy path),
polls ``GET /task/{id}/status`` every ``poll_s`` until the task is terminal, then reads
``GET /task/{id}/result``. :meth:`Load.closed` keeps a fixed number of clients busy until all
tasks are done (saturation); :meth:`Load.open` starts tasks at a fixed rate whatever the
platform's pace (steady load). Every task carries records unique to it (a ``bench_ref`` field),
so each section's prompt can be found in the simulator's timeline.

Submissions answered 429 or 503 (the platform at capacity), or that could not connect, are
retried after a pause and counted; the submit latency recorded is that of the attempt that got
the 202. Everything ends by ``deadline`` (monotonic): a task not finished by then is left
``unfinished``.

The clients use aiohttp, not httpx: on the 2-core benchmark machine an httpx request cost 2.4 ms
of client CPU alone and up to 10 ms with a thousand requests waiting for its pool, an aiohttp
request 0.35-0.45 ms, and the harness shares the CPU with the platform it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.chaos import PASSWORD, SEED, TERMINAL

RETRY_SUBMIT = {429, 503}


@dataclass
class Outcome:
    """One task as its client saw it."""

    seq: int
    records: list[dict[str, Any]]
    task_id: str | None = None
    submit_s: float | None = None  # latency of the submission that got the 202
    submit_retries: int = 0  # 429/503 answers before it
    refused: str = ""  # why the task never got a 202
    status: str = "unfinished"
    elapsed_s: float | None = None  # the result's elapsed_seconds
    message: str = ""  # the result's message
    polls: int = 0  # status calls made by the client
    done_at: float | None = None  # monotonic time its result was read


@dataclass
class Load:
    """Clients of one run; ``outcomes`` grows as tasks start."""

    submit_api: aiohttp.ClientSession  # apart, so submissions never queue behind polls
    poll_api: aiohttp.ClientSession
    run_id: str
    poll_s: float
    deadline: float
    outcomes: list[Outcome] = field(default_factory=list)

    def _new(self) -> Outcome:
        seq = len(self.outcomes)
        records = [{**record, "bench_ref": f"{self.run_id}-{seq}"} for record in SEED]
        self.outcomes.append(Outcome(seq, records))
        return self.outcomes[-1]

    async def task(self, outcome: Outcome) -> None:
        """Submit, poll status until terminal, read the result (each step until the deadline)."""
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                if await self._submit(outcome):
                    await self._follow(outcome)
        except TimeoutError:
            if outcome.task_id is None:
                outcome.refused = "the run's deadline came before a 202"

    async def _submit(self, outcome: Outcome) -> bool:
        body = {"username": "bench@example.com", "password": PASSWORD, "data": outcome.records}
        while True:
            started = time.monotonic()
            try:
                async with self.submit_api.post("/task/submit", json=body) as reply:
                    code, answer = reply.status, await reply.read()
            except aiohttp.ClientError as exc:
                outcome.refused = f"{type(exc).__name__}: {exc}"[:200]
                # Without an idempotency key only a request never sent is safe to send again.
                if not isinstance(exc, aiohttp.ClientConnectorError):
                    return False
                outcome.submit_retries += 1
                await asyncio.sleep(0.5)
                continue
            if code == 202:
                outcome.submit_s = time.monotonic() - started
                outcome.task_id = str(json.loads(answer)["task_id"])
                return True
            outcome.refused = f"{code}: {answer.decode(errors='replace')}"[:200]
            if code not in RETRY_SUBMIT:
                return False
            outcome.submit_retries += 1
            await asyncio.sleep(0.5)

    async def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON of a 200 answer; None for any other answer or a transport error."""
        with contextlib.suppress(aiohttp.ClientError):
            async with self.poll_api.get(path) as reply:
                body = await reply.read()
                if reply.status == 200:
                    return dict(json.loads(body))
        return None

    async def _follow(self, outcome: Outcome) -> None:
        status = ""
        while status not in TERMINAL:
            await asyncio.sleep(self.poll_s)
            outcome.polls += 1
            if (answer := await self._get(f"/task/{outcome.task_id}/status")) is not None:
                status = str(answer["status"])
        result = await self._get(f"/task/{outcome.task_id}/result")
        while result is None:
            await asyncio.sleep(self.poll_s)
            result = await self._get(f"/task/{outcome.task_id}/result")
        outcome.status = str(result["status"])
        outcome.elapsed_s = result.get("elapsed_seconds")
        outcome.message = str(result.get("message", ""))
        outcome.done_at = time.monotonic()

    async def closed(self, clients: int, tasks: int) -> list[Outcome]:
        """``clients`` clients, each running one task after another, ``tasks`` in all."""

        async def client() -> None:
            while len(self.outcomes) < tasks and time.monotonic() < self.deadline:
                await self.task(self._new())

        await asyncio.gather(*(client() for _ in range(clients)))
        return self.outcomes

    async def open(self, rate: float, tasks: int) -> list[Outcome]:
        """One new task every ``1/rate`` s, ``tasks`` in all, each followed by its own client."""
        started, running = time.monotonic(), []
        for n in range(tasks):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            if time.monotonic() >= self.deadline:
                break
            running.append(asyncio.create_task(self.task(self._new())))
        await asyncio.gather(*running)
        return self.outcomes


def client_pair(
    base_url: str, connections: int, api_key: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
    """(submit client, poll client) to the gateway, each pooling up to ``connections`` and
    sending ``api_key``. Call it inside the event loop that uses them."""

    def session() -> aiohttp.ClientSession:
        # Idle connections are dropped well before the gateway's keep-alive timeout (uvicorn:
        # 5 s), so a request never goes out on a connection the server is closing.
        connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=2.0)
        timeout = aiohttp.ClientTimeout(total=90, sock_read=30)
        return aiohttp.ClientSession(
            base_url,
            connector=connector,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    return session(), session()
