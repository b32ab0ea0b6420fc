"""``python -m storage_svc``: serve StorageService and FileService until SIGTERM/SIGINT, sweeping
expired files meanwhile.

Start-up prepares the bucket (create if missing, lifecycle rules, CORS) *before* listening, so a
replica that reports SERVING can always reach S3. If S3 cannot be reached yet — common when the
whole stack starts at once — start-up logs why and keeps retrying with backoff for
``STORAGE_STARTUP_TIMEOUT_S`` seconds, then exits non-zero with a message naming the endpoint
and the error (the orchestrator, Kubernetes or compose restarts it). Errors that waiting cannot
fix (access denied, bucket missing with creation off, bucket name taken) exit at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from common import eventloop
from common.backoff import Backoff
from common.errors import AppError, Unavailable
from common.grpc_server import ServiceHost
from common.logging import configure
from common.settings import load_settings
from common.tls import Role
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from storage_svc.memory import release_large_buffers
from storage_svc.objects import ObjectStore
from storage_svc.servicer import SERVICE_NAME, StorageServicer
from storage_svc.settings import StorageSettings
from storage_svc.store import TaskStore
from storage_svc.sweeper import run_sweeper
from wealthai.storage.v1 import files_pb2_grpc, storage_pb2_grpc

logger = logging.getLogger("storage_svc")

# One process waiting for S3 to come up: no herd to spread, so no jitter.
_STARTUP_BACKOFF = Backoff(initial_s=0.5, max_s=10.0, jitter=0.0)


async def prepare_bucket(
    store: TaskStore, settings: StorageSettings, files: FileStore | None = None
) -> None:
    """Runs ``ensure_bucket`` (and the files' bucket rules) until it succeeds; SystemExit when
    it cannot."""
    where = f"bucket {settings.s3_bucket} at {settings.s3_endpoint_url or 'AWS S3'}"
    deadline = time.monotonic() + settings.startup_timeout_s
    delays = _STARTUP_BACKOFF.delays()
    while True:
        try:
            await store.ensure_bucket()
            if files is not None:
                await files.prepare()
            return
        except Unavailable as exc:
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                logger.error("giving up on S3: %s", exc.message)
                raise SystemExit(
                    f"storage_svc: cannot reach {where} within "
                    f"{settings.startup_timeout_s:g}s: {exc.message}"
                ) from None
            logger.warning("S3 not reachable yet (%s); retrying in %.1fs", exc.message, delay)
            await asyncio.sleep(delay)
        except AppError as exc:
            logger.error("cannot prepare %s: %s", where, exc.message)
            raise SystemExit(f"storage_svc: cannot prepare {where}: {exc.message}") from None


async def serve(settings: StorageSettings) -> None:
    """Prepares the bucket, then serves (and sweeps expired files) until a stop signal; closes
    the S3 client at the end."""
    host = ServiceHost(settings, "storage_svc", Role.STORAGE)  # bad TLS files stop us first
    async with TaskStore(settings) as store:
        files = FileStore(store.s3)
        await prepare_bucket(store, settings, files)
        host.add(
            storage_pb2_grpc.add_StorageServiceServicer_to_server,
            StorageServicer(store, ObjectStore(store.s3)),
            SERVICE_NAME,
        )
        host.add(
            files_pb2_grpc.add_FileServiceServicer_to_server,
            FileServicer(files),
            FILE_SERVICE_NAME,
        )
        await host.start()
        sweeper = asyncio.create_task(run_sweeper(files.sweep, settings.file_sweep_interval_s))
        try:
            await host.run_until_signal()
        finally:
            sweeper.cancel()


def main() -> None:
    """Entry point: settings from the environment, logging, then :func:`serve`."""
    settings = load_settings(StorageSettings)
    configure("storage_svc", settings.log_level, settings.log_format)
    release_large_buffers()
    eventloop.run_service(serve(settings))


if __name__ == "__main__":
    main()
