"""The launcher behind ``make run``: a port in use is reported before anything starts, and
no child outlives it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.accounts import load_accounts
from scripts.devstack import ROOT, Ports, Stack, _banner
from tests.helpers import free_port


def test_a_port_in_use_is_named_and_nothing_is_started(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = Ports(
            gateway=taken,
            orchestrators=[free_port()],
            storage=free_port(),
            simulator=free_port(),
            s3=free_port(),
            workers=[free_port()],
        )
        stack = Stack(ports, tmp_path)
        with pytest.raises(RuntimeError, match=rf"gateway port {taken}.*GATEWAY_PORT"):
            stack.start()
        assert stack.procs == {}


def test_ports_come_from_the_services_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "18000")
    monkeypatch.setenv("DEVSTACK_WORKER_PORTS", "19001,19002,19003")
    ports = Ports.from_env()
    assert ports.gateway == 18000
    assert ports.workers == [19001, 19002, 19003]
    monkeypatch.setenv(
        "DEVSTACK_SEAWEED_PORTS", "29001,29002,29003,29004,39001,39002,39003,39004,39000"
    )
    assert Ports.from_env().seaweed[-1] == 39000


def test_a_busy_seaweedfs_port_is_named_too(tmp_path: Path) -> None:
    ports = Ports.free()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.seaweed[2]))
        busy.listen()
        stack = Stack(ports, tmp_path, s3_server="seaweedfs")
        with pytest.raises(RuntimeError, match=rf"s3 port {ports.seaweed[2]}.*SEAWEED"):
            stack.start()
        assert all(proc.popen is None for proc in stack.procs.values())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process state from /proc")
def test_a_child_dies_with_its_launcher_even_on_kill_9() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, time\n"
            "from scripts.devstack import with_parent\n"
            "child = subprocess.Popen(with_parent(['sleep', '60']))\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    ) as launcher:
        assert launcher.stdout is not None
        child = int(launcher.stdout.readline())
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep"):
            assert time.monotonic() < deadline, "the wrapper never became the command"
            time.sleep(0.02)

        launcher.kill()

    while _alive(child):
        assert time.monotonic() < deadline, f"child {child} outlived its launcher"
        time.sleep(0.02)


def test_a_child_whose_launcher_is_already_gone_does_not_run(tmp_path: Path) -> None:
    def run(parent: str) -> tuple[int, bool]:
        marker = tmp_path / f"ran-{parent}"
        argv = [sys.executable, "-S", "-m", "scripts.with_parent", parent, "touch", str(marker)]
        return subprocess.run(argv, cwd=ROOT, check=False).returncode, marker.exists()

    assert run(str(os.getpid())) == (0, True)  # launched by us: the command runs
    assert run("1") == (1, False)  # our parent is not pid 1: the launcher "died"
    assert run("not-a-pid") == (2, False)


def test_the_admin_key_is_made_once_kept_private_and_given_to_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_KEY", raising=False)
    stack = Stack(Ports(), tmp_path)
    key = stack.admin_key
    assert key.startswith("wak_admin_") and len(key) >= 10 + 43
    key_file = tmp_path / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert Stack(Ports(), tmp_path).admin_key == key  # kept across restarts
    [gateway] = [spec for spec in stack.specs() if spec.name == "gateway"]
    assert gateway.env["GATEWAY_ADMIN_KEY"] == key
    banner = _banner(stack, key, key_file)
    assert key in banner and str(key_file) in banner
    # The printed lines work as printed: the key reaches the header once pasted into a shell.
    [key_line] = [line.strip() for line in banner.splitlines() if line.strip().startswith("KEY=")]
    [submit] = [line.strip() for line in banner.splitlines() if "/task/submit" in line]
    shell = subprocess.run(
        ["bash", "-c", f"{key_line}; curl() {{ printf '%s\\n' \"$@\"; }}; {submit}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"Authorization: Bearer {key}" in shell.stdout.splitlines()


def test_the_platform_accounts_file_is_made_once_kept_private_and_given_to_orchestrators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIM_PASSWORD", raising=False)
    stack = Stack(Ports(orchestrators=[free_port(), free_port()]), tmp_path)
    envs = [spec.env for spec in stack.specs() if spec.name.startswith("orchestrator")]
    path = tmp_path / "platform-accounts.json"
    assert [env["ORCH_PLATFORM_ACCOUNTS_FILE"] for env in envs] == [str(path)] * 2
    assert path.stat().st_mode & 0o777 == 0o600
    accounts = load_accounts(path)  # valid as the orchestrator reads it
    password = accounts.for_tenant("any").password.get_secret_value()
    assert len(password) >= 24
    Stack(Ports(), tmp_path).specs()
    assert load_accounts(path).for_tenant("any").password.get_secret_value() == password


def test_a_given_admin_key_wins_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "g" * 40)
    stack = Stack(Ports(), tmp_path)
    assert stack.admin_key == "g" * 40
    assert not (tmp_path / "admin.key").exists()


def test_metrics_ports_count_up_from_the_first_and_are_off_when_not_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVSTACK_METRICS_PORT", "19100")
    monkeypatch.setenv("DEVSTACK_ORCH_PORTS", "18071,18072")
    ports = Ports.from_env()
    assert ports.metrics == {
        "gateway": 19100,
        "storage": 19101,
        "orchestrator-1": 19102,
        "orchestrator-2": 19103,
        "worker-1": 19104,
        "worker-2": 19105,
    }
    env = {spec.name: spec.env for spec in Stack(ports, tmp_path).specs()}
    assert env["gateway"]["GATEWAY_METRICS_PORT"] == "19100"
    assert env["orchestrator-2"]["ORCH_METRICS_PORT"] == "19103"
    assert env["worker-2"]["WORKER_METRICS_PORT"] == "19105"

    monkeypatch.setenv("DEVSTACK_METRICS_PORT", "0")
    quiet = Ports.from_env()
    assert quiet.metrics == {}
    specs = Stack(quiet, tmp_path).specs()
    # Off, not the services' defaults, which the replicas of one kind would all race for.
    assert {spec.env.get("WORKER_METRICS_PORT") for spec in specs if "worker" in spec.name} == {"0"}
