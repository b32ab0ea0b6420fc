"""What a small PutObject costs storage_svc: through the aioboto3 client, or signed by botocore
and sent on the client's connections (``storage_svc/s3direct.py``).

``python -m bench.s3_puts [--puts 1500] [--concurrency 16] [--runs 3]`` starts SeaweedFS on free
loopback ports (data in a temporary folder, removed after), then, for each run, writes
``puts`` task-sized JSON documents (1.5 KB, SSE, ``concurrency`` at a time) first with the
client's ``put_object`` and then through :meth:`storage_svc.s3calls.S3Calls.put_json`, and
prints this process's CPU time per PUT for each (user + system: on a busy machine wall time
measures the neighbours). SeaweedFS checks every signature.

Not a test: the figure behind ``storage_svc/s3direct.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from scripts import seaweedfs
from scripts.devstack import seaweedfs_server

_BUCKET = "bench-puts"
_BODY = json.dumps({"task_id": "task_20261202120000_0123abcd", "data": "x" * 1500}).encode()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(endpoint: str, puts: int, concurrency: int, runs: int) -> None:
    from storage_svc.s3calls import S3Calls
    from storage_svc.settings import StorageSettings

    settings = StorageSettings(s3_bucket=_BUCKET, s3_endpoint_url=endpoint, s3_region="us-east-1")
    calls = S3Calls(settings)
    await calls.open()
    try:
        await calls.client.create_bucket(Bucket=_BUCKET)
        slots = asyncio.Semaphore(concurrency)

        async def through_client(n: int) -> None:
            async with slots:
                await calls.client.put_object(
                    Bucket=_BUCKET,
                    Key=f"client/{n}.json",
                    Body=_BODY,
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                )

        async def signed_and_sent(n: int) -> None:
            async with slots:
                await calls.put_json(f"direct/{n}.json", _BODY, what="a document")

        ways: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
            ("client", through_client),
            ("direct", signed_and_sent),
        ]
        print(f"{'PutObject':10} {'CPU ms per PUT':>15}")
        for run in range(runs):
            for name, put in ways:
                await asyncio.gather(*(put(n) for n in range(min(100, puts))))  # connect first
                start = _cpu()
                await asyncio.gather(*(put(n) for n in range(puts)))
                per_put = (_cpu() - start) / puts * 1000
                print(f"{name:10} {per_put:15.2f}   (run {run + 1})")
    finally:
        await calls.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ["AWS_ACCESS_KEY_ID"] = seaweedfs.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = seaweedfs.SECRET_KEY
    os.environ.pop("AWS_SESSION_TOKEN", None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-puts-") as folder,
        seaweedfs_server(Path(folder)) as endpoint,
    ):
        asyncio.run(_measure(endpoint, args.puts, args.concurrency, args.runs))


if __name__ == "__main__":
    main()
