"""Checks on what the repository ships besides code: every setting documented, the compose
file and the sections configuration well-formed (compose publishing only the gateway and
passing secrets as files), the orchestrator refusing a bad config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from common.settings import env_names
from gateway.settings import GatewaySettings
from orchestrator.settings import OrchestratorSettings
from section_worker.settings import WorkerSettings
from simulator.settings import SimulatorSettings
from storage_svc.settings import StorageSettings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: list[type[BaseSettings]] = [
    GatewaySettings,
    OrchestratorSettings,
    StorageSettings,
    WorkerSettings,
    SimulatorSettings,
]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_setting_is_in_env_example(cls: type[BaseSettings]) -> None:
    example = (ROOT / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = {field: env_names(cls, field) for field in cls.model_fields}
    # The prefixed name is the one that wins, and the one listed with its default.
    assert all(n[0] == f"{prefix}{field}".upper() for field, n in names.items())
    missing = [n[0] for n in names.values() if n[0] not in documented]
    assert not missing, f".env.example lacks {missing}"
    readme = (ROOT / "README.md").read_text()
    others = [other for n in names.values() for other in n[1:]]
    assert not [o for o in others if f"`{o}`" not in readme], "README lacks a second name"
    assert not [o for o in others if f" {o} " not in example], ".env.example lacks a second name"


def test_env_example_names_no_setting_that_is_gone() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = {
        line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }
    prefixes = tuple(str(cls.model_config.get("env_prefix", "")).upper() for cls in SETTINGS)
    known = {
        name for cls in SETTINGS for field in cls.model_fields for name in env_names(cls, field)
    }
    stale = sorted(n for n in listed if n.startswith(prefixes) and n not in known)
    assert not stale, f".env.example names settings that no longer exist: {stale}"


def test_compose_runs_every_service_with_several_workers() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("gateway", "orchestrator", "section_worker", "storage_svc", "simulator"):
        assert services[name]["command"] == ["python", "-m", name]
    assert services["section_worker"]["deploy"]["replicas"] >= 2
    orchestrator_env = services["orchestrator"]["environment"]
    assert orchestrator_env["ORCH_WORKER_TARGETS"] == "section_worker:50061"
    assert services["storage_svc"]["environment"]["STORAGE_S3_ENDPOINT_URL"].startswith("http")


def test_compose_publishes_only_the_gateway_on_loopback() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    assert list(published) == ["gateway"]
    for port in published["gateway"]:
        # "${VAR:-default}" publishes the default unless the operator sets VAR.
        mapping = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", port)
        assert mapping == "127.0.0.1:8000:8000", port


def test_compose_passes_secrets_as_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    declared = compose["secrets"]
    assert all(set(spec) == {"file"} for spec in declared.values()), declared
    secret_like = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")
    for name, spec in compose["services"].items():
        mounted = set(spec.get("secrets", []))
        assert mounted <= set(declared), f"{name} mounts undeclared secrets"
        for var, value in spec.get("environment", {}).items():
            if not secret_like.search(var):
                continue
            # Only the path of a file the service mounts: bare (MinIO looks under
            # /run/secrets/) or in full.
            assert var.endswith("_FILE"), f"{name}: {var} carries a secret value"
            assert str(value).removeprefix("/run/secrets/") in mounted, f"{name}: {var}"
    orchestrator = compose["services"]["orchestrator"]["environment"]
    assert orchestrator["ORCH_CREDENTIAL_KEY_FILE"] == "/run/secrets/credential_key"


def test_compose_runs_every_grpc_hop_with_mutual_tls_and_one_certificate_per_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    roles = {
        "gateway": ("GATEWAY_", "gateway"),
        "orchestrator": ("ORCH_", "orchestrator"),
        "storage_svc": ("STORAGE_", "storage"),
        "section_worker": ("WORKER_", "worker"),
    }
    for name, (prefix, role) in roles.items():
        spec = compose["services"][name]
        env = spec["environment"]
        assert env[f"{prefix}TLS_DIR"] == "/run/secrets", name
        assert env.get(f"{prefix}TLS_MODE", "mutual") == "mutual", name
        pems = {s for s in spec["secrets"] if s.endswith(".pem")}
        assert pems == {"ca.pem", f"{role}.pem", f"{role}-key.pem"}, name
    for name, spec in compose["secrets"].items():
        if name.endswith(".pem"):
            assert spec["file"] == f"./secrets/tls/{name}"
    assert not any("ca-key" in str(spec) for spec in compose["secrets"].values())


def test_orchestrator_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"sections": {"top_movers": {"asset_id": "x"}}}')
    env = {
        **os.environ,
        "ORCH_CONFIG_PATH": str(bad),
        "ORCH_PORT": "0",
        "ORCH_CREDENTIAL_KEY": "A" * 43 + "=",
    }
    proc = _start_orchestrator(env)
    assert proc.returncode != 0
    assert "sections.top_movers.fields" in proc.stderr
    assert "Field required" in proc.stderr


def test_orchestrator_refuses_to_start_without_a_credential_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    proc = _start_orchestrator(env)
    assert proc.returncode != 0
    assert "ORCH_CREDENTIAL_KEY" in proc.stderr


def _start_orchestrator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
