"""The ``wealthai`` command as a user runs it: a real process on a pseudo-terminal (so it draws
its bars) against the whole platform as real processes. submit --watch shows each section's
bar and the cost, result reads it back; the exit codes a script relies on: 0 done, 1 a task
that failed, 2 a bad file, 3 nothing listening. Without a terminal it prints plain lines."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scripts.devstack import ROOT, Stack
from tests.e2e.test_platform import PASSWORD, SECTIONS, SEED, TOP_MOVERS_CHAIN
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Ran:
    code: int
    raw: str  # as the terminal received it, escape sequences included

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")


def on_terminal(args: list[str], env: dict[str, str], timeout: float = 90) -> Ran:
    """Runs ``wealthai args`` with a pseudo-terminal (120 x 40) as its stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "wealthai_client", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process is gone and the terminal closed
                break
            if not chunk:
                break
            received += chunk
        else:
            proc.kill()
            raise AssertionError(f"wealthai {args} still running after {timeout}s: {received!r}")
    finally:
        os.close(leader)
    return Ran(proc.wait(timeout=10), received.decode("utf-8", "replace"))


def piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs ``wealthai args`` with its output to pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "wealthai_client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """The environment of a user whose key is the stack's admin key (and no config file)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "TERM": "xterm-256color",
        "WEALTHAI_URL": f"http://127.0.0.1:{stack.ports.gateway}",
        "WEALTHAI_API_KEY": stack.admin_key,
    }


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "task.json"
    path.write_text(
        json.dumps({"username": "user@example.com", "password": PASSWORD, "data": SEED})
    )
    return path


def test_submit_watch_draws_a_bar_per_section_then_the_cost_and_result_reads_it(
    env: dict[str, str], task_file: Path, sim: httpx.AsyncClient
) -> None:
    watched = on_terminal(["submit", str(task_file), "--watch"], env)
    assert watched.code == 0, watched.text
    assert "━" in watched.raw and "\x1b[" in watched.raw  # bars, redrawn in place
    task_id = re.search(r"submitted (task_\w+)", watched.text)
    assert task_id is not None, watched.text
    for section in SECTIONS:
        assert re.search(rf"{section}\s.*100%\s+completed \$\d+\.\d{{4}}", watched.text), section
    cost = re.search(r"Cost: \$(\d+\.\d{4})", watched.text)
    assert cost is not None, watched.text
    assert "completed: All 3 sections completed" in watched.text

    result = on_terminal(["result", task_id.group(1)], env)
    assert result.code == 0, result.text
    assert f"${cost.group(1)}" in result.text
    as_json = piped(["result", task_id.group(1), "--json"], env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert f"{data['cost']:.4f}" == cost.group(1)
    assert list(data["data"]) == SECTIONS


async def test_a_task_that_fails_exits_1(
    env: dict[str, str], task_file: Path, sim: httpx.AsyncClient
) -> None:
    (await sim.patch("/_sim/config", json={"fail_assets": TOP_MOVERS_CHAIN})).raise_for_status()
    watched = on_terminal(["submit", str(task_file), "--watch"], env)
    assert watched.code == 1, watched.text
    assert re.search(r"top_movers\s.*error", watched.text), watched.text
    assert "Cost: $" in watched.text
    task_id = re.search(r"submitted (task_\w+)", watched.text)
    assert task_id is not None
    assert on_terminal(["status", task_id.group(1)], env).code == 1


def test_a_file_that_is_not_json_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"username": "user@example.com", "data": [')
    ran = on_terminal(["submit", str(bad), "--watch"], env)
    assert ran.code == 2, ran.text
    assert "not valid JSON" in ran.text


def test_a_task_the_gateway_refuses_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"username": "u@example.com", "password": "x", "data": [{"x": 1}]}))
    ran = piped(["submit", str(odd)], env)
    assert ran.returncode == 2, ran.stderr
    assert "matches no section" in ran.stderr


def test_nothing_listening_exits_3(env: dict[str, str], task_file: Path) -> None:
    ran = on_terminal(
        ["--url", f"http://127.0.0.1:{free_port()}", "submit", str(task_file), "--watch"], env
    )
    assert ran.code == 3, ran.text
    assert "cannot reach" in ran.text


def test_without_a_terminal_the_output_is_plain_lines(
    env: dict[str, str], task_file: Path, sim: httpx.AsyncClient
) -> None:
    ran = piped(["submit", str(task_file), "--watch"], env)
    assert ran.returncode == 0, ran.stderr
    assert "\x1b[" not in ran.stdout and "━" not in ran.stdout
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("submitted task_")
    assert lines[-2].startswith("completed: All 3 sections completed")
    assert re.fullmatch(r"Cost: \$\d+\.\d{4}", lines[-1])


def test_upload_and_download_with_byte_bars(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024 + 3)
    source = tmp_path / "holdings.bin"
    source.write_bytes(data)
    uploaded = on_terminal(["upload", str(source)], env)
    assert uploaded.code == 0, uploaded.text
    file_id = re.search(r"(f_[0-9a-f]{32}_[0-9a-f]{24})", uploaded.text)
    assert file_id is not None, uploaded.text
    assert hashlib.sha256(data).hexdigest() in uploaded.text
    assert "MB" in uploaded.text  # the bar counts bytes

    out = tmp_path / "out"
    out.mkdir()
    downloaded = on_terminal(["download", file_id.group(1), "-o", str(out)], env)
    assert downloaded.code == 0, downloaded.text
    assert (out / "holdings.bin").read_bytes() == data


def test_keys_from_the_command_line(env: dict[str, str]) -> None:
    created = piped(["keys", "create", "cli-ivy", "--tenant", "acme"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("wak_")
    key_id = key.split("_")[1]
    listed = piped(["keys", "list", "--json"], env)
    assert key_id in [k["key_id"] for k in json.loads(listed.stdout)["keys"]]
    assert key not in listed.stdout
    as_client = {**env, "WEALTHAI_API_KEY": key}
    assert piped(["keys", "list"], as_client).returncode == 1  # forbidden: not an admin
    assert piped(["keys", "revoke", key_id], env).returncode == 0
    refused = piped(["tasks"], as_client)
    assert refused.returncode == 1 and "unauthenticated" in refused.stderr
