"""``make run``'s launcher itself (``python -m scripts.devstack``) on SeaweedFS: a worker, an
orchestrator and storage_svc killed with ``kill -9`` come back while the others keep serving and
every task completes; Ctrl-C stops everything without a restart; a stack started again on the
same state folder still has its tasks and API keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.devstack import ROOT, Ports
from tests.e2e.conftest import FAST
from tests.e2e.test_platform import PASSWORD, SEED
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

BODY = {"username": "user@example.com", "password": PASSWORD, "data": SEED}


class Launcher:
    """The launcher as a child in its own session (as a terminal runs ``make run``), its output
    collected line by line."""

    def __init__(self, ports: Ports, state: Path) -> None:
        self.ports = ports
        self.state = state
        self.lines: list[str] = []
        self.popen: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def start(self) -> None:
        p = self.ports
        env = {
            **os.environ,
            **FAST,
            "GATEWAY_PORT": str(p.gateway),
            "DEVSTACK_ORCH_PORTS": ",".join(map(str, p.orchestrators)),
            "STORAGE_PORT": str(p.storage),
            "SIM_PORT": str(p.simulator),
            "DEVSTACK_S3_PORT": str(p.s3),
            "DEVSTACK_WORKER_PORTS": ",".join(map(str, p.workers)),
            "DEVSTACK_SEAWEED_PORTS": ",".join(map(str, p.seaweed)),
            "DEVSTACK_DIR": str(self.state),
        }
        env.pop("GATEWAY_ADMIN_KEY", None)
        self.lines = []
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "scripts.devstack"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, args=(self.popen,), daemon=True)
        self.reader.start()
        self.wait_for("Wealth AI Task Platform is running", timeout=90)

    def _read(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        with popen.stdout:
            for line in popen.stdout:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 30) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[after:]:
                if found := re.search(pattern, line):
                    return found
            assert self.popen is not None
            if time.monotonic() > deadline or self.popen.poll() is not None:
                tail = "\n".join(self.lines[-60:])
                raise AssertionError(f"no line matching {pattern!r}; output ends:\n{tail}")
            time.sleep(0.05)

    def pid(self, name: str) -> int:
        """The pid the launcher last gave ``name``."""
        pids = [
            m[1]
            for line in self.lines
            if (m := re.search(rf"{name} (?:re)?started \(pid (\d+)\)", line))
        ]
        return int(pids[-1])

    def children(self) -> set[int]:
        return {
            int(m[1]) for line in self.lines if (m := re.search(r"started \(pid (\d+)\)", line))
        }

    def ctrl_c(self) -> int:
        """SIGINT to the launcher's whole process group, as a terminal's Ctrl-C; its exit code."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGINT)
        code = self.popen.wait(timeout=60)
        assert self.reader is not None
        self.reader.join(timeout=10)  # the whole output, and the pipe closed
        return code


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    run = Launcher(Ports.free(), tmp_path_factory.mktemp("devstack") / "state")
    run.start()
    yield run
    if run.popen is not None and run.popen.poll() is None:
        run.ctrl_c()


def api(launcher: Launcher, key: str | None = None) -> httpx.AsyncClient:
    key = key or (launcher.state / "admin.key").read_text().strip()
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{launcher.ports.gateway}",
        timeout=20,
        headers={"Authorization": f"Bearer {key}"},
    )


async def _statuses(client: httpx.AsyncClient, ids: list[str]) -> list[str]:
    statuses = []
    for task_id in ids:
        reply = await client.get(f"/task/{task_id}/status")
        statuses.append(reply.json().get("status", "?") if reply.status_code == 200 else "?")
    return statuses


async def _submit(client: httpx.AsyncClient, n: int) -> list[str]:
    """Submits ``n`` tasks as a client would: a 503 while a service that just came back is
    being reconnected to is tried again (with the same Idempotency-Key), for up to 20 s."""
    ids = []
    for _ in range(n):
        headers = {"Idempotency-Key": f"supervised-{time.time_ns()}"}
        reply = await assert_eventually(
            lambda headers=headers: client.post("/task/submit", json=BODY, headers=headers),
            lambda answer: answer.status_code != 503,
            timeout=20,
            interval=0.3,
            what="a submission past the reconnect",
        )
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["task_id"])
    return ids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process state from /proc")
@pytest.mark.timeout(300)
async def test_killed_services_come_back_and_every_task_completes(launcher: Launcher) -> None:
    sim = f"http://127.0.0.1:{launcher.ports.simulator}"
    async with httpx.AsyncClient() as plain:
        # Slow answers, so tasks are in flight when each service dies.
        slow = {"latency_median_s": 1.5, "latency_sigma": 0.2}
        (await plain.patch(f"{sim}/_sim/config", json=slow)).raise_for_status()
    async with api(launcher) as client:
        ids: list[str] = []
        for name in ("worker-1", "orchestrator-1", "storage"):
            ids += await _submit(client, 4)
            victim, mark = launcher.pid(name), len(launcher.lines)

            os.kill(victim, signal.SIGKILL)

            launcher.wait_for(rf"{name} exited with code -9; restarting in 0\.5 s", after=mark)
            launcher.wait_for(rf"{name} is back on port \d+", after=mark, timeout=60)
            assert launcher.pid(name) != victim
            assert not _alive(victim)

        statuses = await assert_eventually(
            lambda: _statuses(client, ids),
            lambda found: all(s == "completed" for s in found),
            timeout=120,
            interval=0.5,
            what="every task completed",
        )
    assert len(statuses) == 12
    # The others kept serving: nothing but the three victims was restarted.
    restarted = {
        m[1] for line in launcher.lines if (m := re.search(r"(\S+) restarted \(pid", line))
    }
    assert restarted == {"worker-1", "orchestrator-1", "storage"}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process state from /proc")
@pytest.mark.timeout(300)
async def test_a_stack_started_again_keeps_its_tasks_and_keys(launcher: Launcher) -> None:
    async with api(launcher) as admin:
        reply = await admin.post(
            "/admin/keys", json={"name": "ann", "tenant": "acme", "role": "client"}
        )
        assert reply.status_code == 201, reply.text
        key = reply.json()["key"]
    async with api(launcher, key) as ann:
        [task_id] = await _submit(ann, 1)
        await assert_eventually(
            lambda: _statuses(ann, [task_id]),
            lambda found: found == ["completed"],
            timeout=60,
            interval=0.2,
            what="the task completed",
        )
        before = (await ann.get(f"/task/{task_id}/result")).json()
    children = launcher.children()
    mark = len(launcher.lines)

    assert launcher.ctrl_c() == 0

    after_stop = launcher.lines[mark:]
    assert "stopped." in after_stop
    assert not [line for line in after_stop if "restart" in line], after_stop
    assert not [pid for pid in children if _alive(pid)]
    data = launcher.state / "s3"
    assert data.is_dir() and any(data.iterdir())

    launcher.start()
    banner = "\n".join(launcher.lines)
    assert f"kept on disk in {data}/" in banner and "make run-clean" in banner

    async with api(launcher, key) as ann:
        reply = await ann.get(f"/task/{task_id}/result")
        assert reply.status_code == 200, reply.text
        assert reply.json() == before
        listing = await ann.get("/tasks")
        assert listing.status_code == 200, listing.text
        assert task_id in [t["task_id"] for t in listing.json()["tasks"]]
