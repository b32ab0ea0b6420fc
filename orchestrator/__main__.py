"""``python -m orchestrator``: starts the orchestrator's gRPC server."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import socket
import sys

from common import eventloop
from common.grpc_server import ServiceHost
from common.logging import configure
from common.settings import load_settings
from common.tls import Role
from orchestrator.config import ConfigError, load_config
from orchestrator.credentials import Sealer
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.servicer import SERVICE_NAME, OrchestratorServicer
from orchestrator.settings import OrchestratorSettings
from orchestrator.storage_client import StorageClient
from orchestrator.worker_client import GrpcWorkerClient
from orchestrator.workers import WorkerPool
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc


async def serve(settings: OrchestratorSettings) -> None:
    try:
        config = load_config(settings.config_path)
    except ConfigError as exc:
        sys.exit(f"orchestrator: bad sections configuration: {exc}")
    keyring = settings.keyring()
    replica_id = f"{settings.replica_name or socket.gethostname()}-{secrets.token_hex(4)}"
    host = ServiceHost(settings, "orchestrator", Role.ORCHESTRATOR)
    tls = host.identity  # the same certificate serves and calls
    deps = Deps(
        storage=StorageClient(settings.storage_target, tls),
        pool=WorkerPool(
            list(settings.worker_targets),
            refresh_s=settings.worker_refresh_s,
            connect=functools.partial(GrpcWorkerClient, tls=tls),
        ),
        config=config,
        sealer=Sealer(keyring),
        replica_id=replica_id,
        auth_wait_s=settings.auth_wait_s,
    )
    # From the sealing key: the one key every replica of one configuration agrees on.
    digest_key = hashlib.sha256(b"idempotency\0" + next(iter(keyring.values()))).digest()
    address = settings.advertise_address or f"{settings.host}:{host.bind()}"
    accounts = settings.platform_accounts()
    if len(accounts):
        logging.getLogger(__name__).info(
            "platform service accounts of tenants %s", accounts.tenants
        )
    orchestrator = Orchestrator(
        settings,
        deps,
        digest_key,
        address,
        peers=Peers(tls),
        accounts=accounts,
    )
    host.add(
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        OrchestratorServicer(orchestrator),
        SERVICE_NAME,
    )
    await host.start()
    await orchestrator.start()
    try:
        await host.run_until_signal()
    finally:
        await orchestrator.stop()


def main() -> None:
    settings = load_settings(OrchestratorSettings)
    configure("orchestrator", settings.log_level, settings.log_format)
    eventloop.run_service(serve(settings))


if __name__ == "__main__":
    main()
