"""``python -m section_worker``: serves section jobs until SIGTERM or SIGINT, then drains."""

from __future__ import annotations

import sys

from common import eventloop
from common.logging import configure
from common.platform_config import PlatformConfig
from common.settings import load_settings
from common.tls import Role, identity_for
from section_worker.files import FileClient
from section_worker.jobs import JobRunner
from section_worker.platform_client import PlatformClient
from section_worker.protection.guard import open_protection
from section_worker.servicer import build_host
from section_worker.settings import WorkerSettings


async def serve(settings: WorkerSettings, config: PlatformConfig) -> None:
    """Serves until a stop signal; then refuses new jobs and lets running ones finish
    (up to ``shutdown_grace_s``) before the server stops."""
    try:
        protection = await open_protection(
            config,
            limits_url=settings.limits_url,
            password=settings.limits_password(),
            lease_ttl_s=settings.lease_ttl_s,
        )
    except (ConnectionError, ValueError) as exc:
        sys.exit(f"section_worker: {exc} (WORKER_LIMITS_URL, WORKER_LIMITS_PASSWORD_FILE)")
    files = FileClient(settings.storage_target, identity_for(settings, Role.WORKER))
    try:
        async with PlatformClient(settings) as client:
            runner = JobRunner(client, settings, protection, files=files)
            await runner.start()  # what peers learned of the assets' latencies
            host = build_host(settings, runner, client)
            try:
                await host.start()

                async def drain() -> None:
                    await runner.drain(settings.shutdown_grace_s)

                await host.run_until_signal(on_drain=drain)
            finally:
                await runner.close()
    finally:
        await files.close()
        await protection.close()


def main() -> None:
    settings = load_settings(WorkerSettings)
    configure("section_worker", settings.log_level, settings.log_format)
    try:
        config = settings.platform_config()
    except ValueError as exc:
        sys.exit(f"section_worker: {exc} (WORKER_CONFIG_PATH names the file)")
    eventloop.run_service(serve(settings, config))


if __name__ == "__main__":
    main()
