"""File benchmark: large files through the REST gateway, next to the same bytes straight to S3.

``python -m bench.files`` (``make bench-files``) starts the platform on free loopback ports with
SeaweedFS as the S3 server (the :class:`scripts.devstack.Stack` of ``make run``), then:

1. uploads and downloads one file (350 MB) straight to and from SeaweedFS with aioboto3, the
   client storage_svc uses, as storage_svc does it (a multipart upload of 8 MiB parts, a
   download read in 1 MiB chunks): the baseline;
2. uploads the same bytes through ``POST /files`` and downloads them through
   ``GET /files/{id}`` with an aiohttp client, both streamed, while the resident memory of the
   gateway and of storage_svc is read from ``/proc`` (the peak, ``VmHWM``, reset before each
   transfer, and a sample every 20 ms);
3. uploads ten files of 50 MB at once through the gateway, memory read the same way.

The bytes are made on the fly, 1 MiB at a time (never the whole file in memory), and their
SHA-256 is computed on the way in every transfer, direct or not, so each pays the same for it
and each is verified. Figures: MB/s of each transfer (MB = 10^6 bytes), the gateway's ratio to
the direct transfer in the same direction (target >= 0.7), and each service's peak memory
growth over its resident memory before the transfer (target <= 64 MiB for the single file).
Progress goes to stderr; the JSON summary to stdout and to ``bench/results/files-<UTC>.json``.
Exit code 0 when every target passes, 1 otherwise, 2 when the platform does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp

from bench.procstats import MIB, machine_busy, usage
from bench.stack import QUIET
from scripts import seaweedfs
from scripts.devstack import ROOT, Ports, Stack

MB = 1_000_000
PART_BYTES = 8 * MIB  # storage_svc's default STORAGE_FILE_PART_BYTES
CHUNK_BYTES = MIB
BUCKET = "bench-files"
SERVICES = ("gateway", "storage")
RATIO_TARGET = 0.7
RSS_TARGET_MIB = 64.0
SAMPLE_S = 0.02


def say(message: str) -> None:
    """A progress line on stderr, so stdout carries only the JSON summary."""
    print(f"[bench.files {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--size-mb", type=int, default=350, help="the single file, MB")
    parser.add_argument("--concurrent", type=int, default=10, help="files uploaded at once")
    parser.add_argument("--concurrent-mb", type=int, default=50, help="size of each, MB")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service logs")
    return parser.parse_args(argv)


class Generated:
    """``size`` bytes made on the fly from ``seed``, 1 MiB at a time; the SHA-256 of what was
    handed out so far in :attr:`digest`."""

    def __init__(self, size: int, seed: str) -> None:
        self.size = size
        self._block = hashlib.sha256(seed.encode()).digest() * (CHUNK_BYTES // 32)
        self.digest = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        for offset in range(0, self.size, CHUNK_BYTES):
            chunk = (
                offset.to_bytes(8, "big") + self._block[8 : min(CHUNK_BYTES, self.size - offset)]
            )
            self.digest.update(chunk)
            yield chunk

    def expected(self) -> str:
        """The SHA-256 of all the bytes (computed without keeping them)."""
        whole = hashlib.sha256()
        for offset in range(0, self.size, CHUNK_BYTES):
            whole.update(offset.to_bytes(8, "big"))
            whole.update(self._block[8 : min(CHUNK_BYTES, self.size - offset)])
        return whole.hexdigest()


class Watch:
    """Over one phase: the peak resident memory of the watched services over what they held
    before, and the CPU seconds spent by them, by the S3 server and by this client."""

    def __init__(self, pids: dict[str, int], s3_pid: int) -> None:
        self.pids = pids
        self.s3_pid = s3_pid
        self.before = {name: usage(pid).rss for name, pid in pids.items()}
        self.peak = dict(self.before)
        self.cpu: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._cpu_before: dict[str, float] = {}
        self._busy_before = (0.0, 0.0)
        self.machine_busy = 0.0
        for pid in pids.values():
            # "5" resets VmHWM to the current RSS (Linux 4.0+); without it, the samples count.
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def _cpu_now(self) -> dict[str, float]:
        now = {name: usage(pid).cpu_s for name, pid in self.pids.items()}
        return now | {"s3": usage(self.s3_pid).cpu_s, "client": time.process_time()}

    async def __aenter__(self) -> Watch:
        self._cpu_before = self._cpu_now()
        self._busy_before = machine_busy()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._read(hwm=True)
        after = self._cpu_now()
        self.cpu = {name: round(after[name] - self._cpu_before[name], 2) for name in after}
        busy, total = machine_busy()
        spent = total - self._busy_before[1]
        self.machine_busy = round((busy - self._busy_before[0]) / spent, 2) if spent else 0.0

    async def _sample(self) -> None:
        while True:
            self._read(hwm=False)
            await asyncio.sleep(SAMPLE_S)

    def _read(self, *, hwm: bool) -> None:
        for name, pid in self.pids.items():
            now = usage(pid)
            self.peak[name] = max(self.peak[name], now.peak_rss if hwm else now.rss)

    def growth_mib(self) -> dict[str, float]:
        return {name: round((self.peak[name] - self.before[name]) / MIB, 1) for name in self.pids}


def rate(size: int, seconds: float) -> float:
    return round(size / MB / seconds, 1)


async def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


# -- straight to S3, as storage_svc does it --------------------------------------------------


async def direct_upload(s3: Any, key: str, data: Generated) -> None:
    created = await s3.create_multipart_upload(
        Bucket=BUCKET, Key=key, ServerSideEncryption="AES256"
    )
    upload_id = created["UploadId"]
    parts: list[dict[str, Any]] = []
    part = bytearray()

    async def put(body: bytes) -> None:
        answer = await s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=len(parts) + 1,
            Body=io.BytesIO(body),
        )
        parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})

    async for chunk in data.chunks():
        part += chunk
        if len(part) >= PART_BYTES:
            body = bytes(memoryview(part)[:PART_BYTES])
            part = part[PART_BYTES:]
            await put(body)
    if part:
        await put(bytes(part))
    await s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


async def direct_download(s3: Any, key: str) -> str:
    digest = hashlib.sha256()
    answer = await s3.get_object(Bucket=BUCKET, Key=key)
    async with answer["Body"] as body:
        async for chunk in body.content.iter_chunked(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# -- through the gateway ---------------------------------------------------------------------


async def gateway_upload(
    http: aiohttp.ClientSession, base: str, name: str, data: Generated
) -> dict[str, Any]:
    headers = {
        "X-Filename": name,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(data.size),
    }
    async with http.post(f"{base}/files", data=data.chunks(), headers=headers) as reply:
        body = await reply.json()
        if reply.status != 201:
            raise RuntimeError(f"upload of {name} answered {reply.status}: {body}")
        return dict(body)


async def gateway_download(http: aiohttp.ClientSession, base: str, file_id: str) -> str:
    digest = hashlib.sha256()
    async with http.get(f"{base}/files/{file_id}") as reply:
        if reply.status != 200:
            raise RuntimeError(f"download of {file_id} answered {reply.status}")
        async for chunk in reply.content.iter_chunked(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


async def measure(stack: Stack, opts: argparse.Namespace) -> dict[str, Any]:
    size = opts.size_mb * MB
    base = f"http://127.0.0.1:{stack.ports.gateway}"
    pids = {name: _pid(stack, name) for name in SERVICES}
    s3_pid = _pid(stack, "s3")
    session = aioboto3.Session(
        aws_access_key_id=seaweedfs.ACCESS_KEY,
        aws_secret_access_key=seaweedfs.SECRET_KEY,
        region_name="us-east-1",
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with (
        session.client("s3", endpoint_url=f"http://127.0.0.1:{stack.ports.s3}") as s3,
        aiohttp.ClientSession(timeout=timeout, headers=headers) as http,
    ):
        data = Generated(size, "single")
        expected = data.expected()
        say(f"direct upload of {opts.size_mb} MB to S3 (multipart, 8 MiB parts)")
        async with Watch(pids, s3_pid) as up_direct_watch:
            up_direct = await timed(lambda: direct_upload(s3, "bench/direct.bin", data))
        say(f"  {rate(size, up_direct)} MB/s")
        say("direct download")
        got: dict[str, str] = {}

        async def down_direct_() -> None:
            got["direct"] = await direct_download(s3, "bench/direct.bin")

        async with Watch(pids, s3_pid) as down_direct_watch:
            down_direct = await timed(down_direct_)
        say(f"  {rate(size, down_direct)} MB/s")
        await s3.delete_object(Bucket=BUCKET, Key="bench/direct.bin")

        data = Generated(size, "single")
        say(f"upload of {opts.size_mb} MB through the gateway")
        meta: dict[str, Any] = {}

        async def up_gateway_() -> None:
            meta.update(await gateway_upload(http, base, "single.bin", data))

        async with Watch(pids, s3_pid) as up_watch:
            up_gateway = await timed(up_gateway_)
        say(f"  {rate(size, up_gateway)} MB/s, memory growth {up_watch.growth_mib()} MiB")
        say("download through the gateway")

        async def down_gateway_() -> None:
            got["gateway"] = await gateway_download(http, base, meta["file_id"])

        async with Watch(pids, s3_pid) as down_watch:
            down_gateway = await timed(down_gateway_)
        say(f"  {rate(size, down_gateway)} MB/s, memory growth {down_watch.growth_mib()} MiB")
        await http.delete(f"{base}/files/{meta['file_id']}")
        checks = {
            "direct_download": got["direct"] == expected,
            "gateway_upload": meta["sha256"] == expected and meta["size"] == size,
            "gateway_download": got["gateway"] == expected,
        }

        many = [Generated(opts.concurrent_mb * MB, f"many-{n}") for n in range(opts.concurrent)]
        say(f"{opts.concurrent} uploads of {opts.concurrent_mb} MB at once through the gateway")
        metas: list[dict[str, Any]] = []

        async def many_() -> None:
            metas.extend(
                await asyncio.gather(
                    *(gateway_upload(http, base, f"many-{n}.bin", d) for n, d in enumerate(many))
                )
            )

        async with Watch(pids, s3_pid) as many_watch:
            many_s = await timed(many_)
        total = opts.concurrent * opts.concurrent_mb * MB
        say(f"  {rate(total, many_s)} MB/s in all, memory growth {many_watch.growth_mib()} MiB")
        checks["concurrent_uploads"] = all(
            m["sha256"] == d.expected() for m, d in zip(metas, many, strict=True)
        )
        for m in metas:
            await http.delete(f"{base}/files/{m['file_id']}")

    # Gateway MB/s over direct MB/s: the same bytes, so the direct time over the gateway's.
    upload_ratio = round(up_direct / up_gateway, 2)
    download_ratio = round(down_direct / down_gateway, 2)
    single_growth = {
        name: max(up_watch.growth_mib()[name], down_watch.growth_mib()[name]) for name in SERVICES
    }
    targets = [
        _target(
            "upload ratio (gateway / direct)",
            upload_ratio,
            f">= {RATIO_TARGET}",
            upload_ratio >= RATIO_TARGET,
        ),
        _target(
            "download ratio (gateway / direct)",
            download_ratio,
            f">= {RATIO_TARGET}",
            download_ratio >= RATIO_TARGET,
        ),
        *(
            _target(
                f"{name} memory growth, single file (MiB)",
                growth,
                f"<= {RSS_TARGET_MIB}",
                growth <= RSS_TARGET_MIB,
            )
            for name, growth in single_growth.items()
        ),
        *(_target(f"bytes intact: {what}", ok, "true", ok) for what, ok in checks.items()),
    ]
    return {
        "single": {
            "size_mb": opts.size_mb,
            "direct_mb_s": {"upload": rate(size, up_direct), "download": rate(size, down_direct)},
            "gateway_mb_s": {
                "upload": rate(size, up_gateway),
                "download": rate(size, down_gateway),
            },
            "ratio": {"upload": upload_ratio, "download": download_ratio},
            "memory_growth_mib": {
                "upload": up_watch.growth_mib(),
                "download": down_watch.growth_mib(),
            },
            # CPU seconds of each process during each transfer, and how busy the
            # whole machine was (1.0: both cores all the time, whoever used them).
            "cpu_s": {
                "upload": up_watch.cpu,
                "download": down_watch.cpu,
                "direct_upload": up_direct_watch.cpu,
                "direct_download": down_direct_watch.cpu,
            },
            "machine_busy": {
                "upload": up_watch.machine_busy,
                "download": down_watch.machine_busy,
                "direct_upload": up_direct_watch.machine_busy,
                "direct_download": down_direct_watch.machine_busy,
            },
        },
        "concurrent": {
            "files": opts.concurrent,
            "size_mb": opts.concurrent_mb,
            "seconds": round(many_s, 1),
            "mb_s": rate(total, many_s),
            "memory_growth_mib": many_watch.growth_mib(),
            "cpu_s": many_watch.cpu,
        },
        "targets": targets,
        "ok": all(t["pass"] for t in targets),
    }


def _target(name: str, value: Any, target: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "pass": bool(passed)}


def _pid(stack: Stack, name: str) -> int:
    popen = stack.procs[name].popen
    assert popen is not None
    return popen.pid


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-files-"))
    env = QUIET | {"GATEWAY_FILE_MAX_BYTES": str(max(opts.size_mb, opts.concurrent_mb) * MB)}
    stack = Stack(
        Ports.free(workers=1),
        base / "state",
        log_dir=base / "logs",
        env=env,
        bucket=BUCKET,
        s3_server="seaweedfs",
    )
    say(f"starting the platform on SeaweedFS (logs in {base / 'logs'})")
    try:
        stack.start(timeout=120)
    except RuntimeError as exc:
        say(f"the platform did not start: {exc}")
        stack.stop()
        return 2
    try:
        figures = asyncio.run(measure(stack, opts))
    finally:
        stack.stop()
    now = datetime.now(UTC)
    summary = {
        "date": now.isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        **figures,
    }
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    path = opts.results_dir / f"files-{now:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    for target in figures["targets"]:
        verdict = "PASS" if target["pass"] else "FAIL"
        say(f"{verdict}  {target['name']}: {target['value']} (target {target['target']})")
    print(json.dumps(summary | {"results_file": str(path)}, indent=2), flush=True)
    if figures["ok"] and not opts.keep_logs:
        shutil.rmtree(base, ignore_errors=True)
    else:
        say(f"service logs kept in {base / 'logs'}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
