"""``python -m section_worker``: serves section jobs until SIGTERM or SIGINT, then drains."""

from __future__ import annotations

import sys

from common import eventloop
from common.logging import configure
from common.settings import load_settings
from common.tls import Role, identity_for
from section_worker.files import FileClient
from section_worker.jobs import JobRunner
from section_worker.platform_client import PlatformClient
from section_worker.servicer import build_host
from section_worker.settings import WorkerSettings


async def serve(settings: WorkerSettings) -> None:
    """Serves until a stop signal; then refuses new jobs and lets running ones finish
    (up to ``shutdown_grace_s``) before the server stops."""
    files = FileClient(settings.storage_target, identity_for(settings, Role.WORKER))
    async with PlatformClient(settings) as client:
        runner = JobRunner(client, settings, files)
        host = build_host(settings, runner, client)
        await host.start()

        async def drain() -> None:
            await runner.drain(settings.shutdown_grace_s)

        try:
            await host.run_until_signal(on_drain=drain)
        finally:
            await files.close()


def main() -> None:
    settings = load_settings(WorkerSettings)
    configure("section_worker", settings.log_level, settings.log_format)
    try:
        settings.known_assets()
    except ValueError as exc:
        sys.exit(f"section_worker: {exc} (WORKER_CONFIG_PATH names the file)")
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
