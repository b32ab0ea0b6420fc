"""Which transport the async client should run on: httpx's own or aiohttp's (httpx-aiohttp);
and what the section workers' platform client (aiohttp alone) costs per call beside them.

``python -m bench.client_transport [--requests 3000] [--concurrency 10] [--megabytes 200]
[--runs 3]`` starts a loopback server (uvicorn, an app that answers a task status of the
gateway's size, streams a download and takes an upload) and, for each run and transport, a
fresh client process that sends the small requests ``concurrency`` at a time, downloads and
uploads ``megabytes``, and reports its own CPU time (user + system) for each: CPU rather than
wall time, because on a busy machine the wall clock measures the neighbours. A third client,
``platform``, sends the same number of polls for an answer through
:class:`section_worker.platform_client.PlatformClient` (no download or upload: it makes none).

Not a test: the figures behind the choices in ``wealthai_client/transport.py`` and
``section_worker/platform_client.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx

from scripts.devstack import ROOT, wait_for_port
from scripts.ports import free_ports

_STATUS = {
    "task_id": "task_20261201120000_0123abcd",
    "status": "processing",
    "progress": 50,
    "message": "x" * 200,
    "sections": [
        {"name": f"s{i}", "status": "running", "cost": 0.1, "error": "", "progress": ""}
        for i in range(3)
    ],
    "trace": [],
    "created_at": "2026-12-01T12:00:00",
    "updated_at": "2026-12-01T12:00:01",
    "completed_at": None,
}
_CHUNK = b"x" * 65536


def serve(port: int) -> None:
    """The loopback server: GET /status, GET /download?mb=N, POST /upload."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(_STATUS)

    async def answer(_: Request) -> JSONResponse:
        return JSONResponse({"status": "SUCCESS", "response": "x" * 200, "cost": 0.01})

    async def download(request: Request) -> StreamingResponse:
        chunks = int(request.query_params["mb"]) * 16

        async def body() -> AsyncIterator[bytes]:
            for _ in range(chunks):
                yield _CHUNK

        length = str(chunks * len(_CHUNK))
        return StreamingResponse(body(), headers={"Content-Length": length})

    async def upload(request: Request) -> JSONResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse({"size": size})

    routes = [
        Route("/status", status),
        Route("/magicplatform/v1/genai/conversation/response/{conv}/{message}", answer),
        Route("/download", download),
        Route("/upload", upload, methods=["POST"]),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    kind: str, port: int, requests: int, concurrency: int, mb: int
) -> dict[str, float]:
    """One client process's CPU for each part, on transport ``kind``."""
    from wealthai_client.transport import async_transport

    if kind == "platform":
        return {"ms_cpu_per_request": await _platform_polls(port, requests, concurrency)}

    transport = async_transport() if kind == "aiohttp" else httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport) as api:
        (await api.get("/status")).raise_for_status()  # connect first
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                reply = await api.get("/status")
                reply.raise_for_status()
                reply.json()

        start = _cpu()
        await asyncio.gather(*(one() for _ in range(requests)))
        small = (_cpu() - start) / requests
        start, got = _cpu(), 0
        async with api.stream("GET", "/download", params={"mb": mb}) as reply:
            async for chunk in reply.aiter_bytes():
                got += len(chunk)
        down = _cpu() - start

        async def body() -> AsyncIterator[bytes]:
            for _ in range(mb * 16):
                yield _CHUNK

        start = _cpu()
        size = str(mb * 16 * len(_CHUNK))
        sent = await api.post("/upload", content=body(), headers={"Content-Length": size})
        up = _cpu() - start
    assert got == sent.json()["size"] == int(size)
    return {"ms_cpu_per_request": small * 1000, "s_cpu_download": down, "s_cpu_upload": up}


async def _platform_polls(port: int, requests: int, concurrency: int) -> float:
    """The worker's platform client's CPU per poll, in ms."""
    from section_worker.platform_client import PlatformClient
    from section_worker.settings import WorkerSettings

    settings = WorkerSettings(platform_url=f"http://127.0.0.1:{port}")
    async with PlatformClient(settings) as client:
        await client.poll("token", "c", "m")  # connect first
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await client.poll("token", "c", "m")

        start = _cpu()
        await asyncio.gather(*(one() for _ in range(requests)))
        return (_cpu() - start) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--client", choices=["httpx", "aiohttp", "platform"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.client:
        figures = asyncio.run(
            measure(args.client, args.port, args.requests, args.concurrency, args.megabytes)
        )
        print(json.dumps(figures))
        return

    (port,) = free_ports(1)
    command = [sys.executable, "-m", "bench.client_transport"]
    server = subprocess.Popen([*command, "--serve", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, server, "server", timeout=30)
        print(
            f"{'transport':10} {'CPU ms/request':>15} {'CPU s download':>15} {'CPU s upload':>13}"
        )
        for run in range(args.runs):
            for kind in ("httpx", "aiohttp", "platform"):
                out = subprocess.run(
                    [
                        *command,
                        "--client",
                        kind,
                        "--port",
                        str(port),
                        "--requests",
                        str(args.requests),
                        "--concurrency",
                        str(args.concurrency),
                        "--megabytes",
                        str(args.megabytes),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                f = json.loads(out.stdout)
                down, up = (
                    f"{f[k]:.2f}" if k in f else "—" for k in ("s_cpu_download", "s_cpu_upload")
                )
                small = f["ms_cpu_per_request"]
                print(f"{kind:10} {small:15.2f} {down:>15} {up:>13}   (run {run + 1})")
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
