"""The Celery peer's HTTP front: the platform gateway's submit, status and result calls (SPEC
§6), so the benchmark's load clients drive the peer exactly as they drive the platform.

``python -m bench.peers.front --port P`` (settings from ``PEER_*``) serves:

======  ======================  ==============================================================
POST    /task/submit            validates ``{username, password, data}``, detects the sections,
                                writes the task document to S3 (``pending``), sends the Celery
                                task (the password sealed), answers 202 ``{task_id, status,
                                message, created_at}``
GET     /task/{id}/status       ``{task_id, status}`` from the result backend: ``pending``
                                until a worker starts the task (Celery cannot tell an unknown
                                id from a waiting one), ``processing``, then the task's final
                                status
GET     /task/{id}/result       the task document read from S3, as the gateway's result
GET     /ping                   ``{"status": "healthy"}``
======  ======================  ==============================================================

Every call but ``/ping`` needs ``Authorization: Bearer <PEER_API_KEY>`` (401 otherwise). Bad
input is 422 naming the field, a record that feeds no section 422 with what each expects.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from aiohttp import web
from botocore.exceptions import ClientError

from bench.peers import documents
from bench.peers.celery_peer import TASK_NAME, make_app
from bench.peers.settings import PeerSettings, seal
from bench.standin import until_stopped
from common import eventloop
from common.errors import InvalidInput
from common.platform_config import load_config
from scripts.devstack import ROOT

CELERY_STATES = {"PENDING": "pending", "RECEIVED": "pending", "STARTED": "processing"}
MAX_BODY = 1 << 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def submission(body: object) -> tuple[str, str, list[dict[str, Any]]]:
    """(username, password, records) of a submit body; InvalidInput naming what is wrong."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    username, password, data = body.get("username"), body.get("password"), body.get("data")
    if not isinstance(username, str) or not 0 < len(username) <= 256:
        raise InvalidInput("username must be a string of 1 to 256 characters")
    if not isinstance(password, str) or not 0 < len(password) <= 1024:
        raise InvalidInput("password must be a string of 1 to 1024 characters")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InvalidInput("data must be a list of objects")
    return username, password, data


def status_of(state: str, result: object) -> str:
    """The task status a Celery state (and, once it succeeded, its return value) stands for."""
    if state == "SUCCESS" and isinstance(result, dict) and "status" in result:
        return str(result["status"])
    if state in ("FAILURE", "REVOKED", "SUCCESS"):
        return "error"
    return CELERY_STATES.get(state, "processing")


def create_app(settings: PeerSettings) -> web.Application:
    """The front's routes; the S3 client opens with the app and closes with it."""
    config = load_config(ROOT / settings.config_path)
    celery = make_app(settings)
    api_key = settings.api_key.get_secret_value().encode()
    s3: list[Any] = []  # the aioboto3 client, once open

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/ping":
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), api_key):
                return _error(401, "missing or unknown API key")
        return await handler(request)

    async def open_s3(app: web.Application) -> AsyncIterator[None]:
        aio = AioConfig(
            max_pool_connections=64,
            retries={"mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
        session = aioboto3.Session()
        async with session.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=aio,
        ) as client:
            try:
                await client.head_bucket(Bucket=settings.bucket)
            except ClientError:
                await client.create_bucket(Bucket=settings.bucket)
            s3.append(client)
            yield
            s3.clear()

    async def submit(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(422, "the body is not JSON")
        try:
            username, password, records = submission(body)
            jobs = documents.jobs_of(records, config)
        except InvalidInput as exc:
            return _error(422, str(exc))
        task_id = documents.new_task_id()
        doc = documents.submitted(task_id, username, settings.tenant, records, jobs)
        await s3[0].put_object(
            Bucket=settings.bucket,
            Key=documents.key_of(task_id),
            Body=json.dumps(doc).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )
        celery.send_task(TASK_NAME, args=[doc, seal(settings, password)], task_id=task_id)
        answer = {
            "task_id": task_id,
            "status": "pending",
            "message": doc["message"],
            "created_at": doc["created_at"],
        }
        return web.json_response(answer, status=202)

    def task_id_of(request: web.Request) -> str:
        task_id = request.match_info["task_id"]
        if not documents.TASK_ID.match(task_id):
            raise web.HTTPNotFound(
                text='{"error": "unknown task"}', content_type="application/json"
            )
        return task_id

    async def status(request: web.Request) -> web.Response:
        task_id = task_id_of(request)
        found = celery.AsyncResult(task_id)
        state = str(found.state)
        answer = status_of(state, found.result if state == "SUCCESS" else None)
        return web.json_response({"task_id": task_id, "status": answer})

    async def result(request: web.Request) -> web.Response:
        task_id = task_id_of(request)
        try:
            got = await s3[0].get_object(Bucket=settings.bucket, Key=documents.key_of(task_id))
            doc = json.loads(await got["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return _error(404, "unknown task")
            raise
        return web.json_response(documents.result_view(doc))

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    app = web.Application(middlewares=[authenticate], client_max_size=MAX_BODY)
    app.cleanup_ctx.append(open_s3)
    app.add_routes(
        [
            web.post("/task/submit", submit),
            web.get("/task/{task_id}/status", status),
            web.get("/task/{task_id}/result", result),
            web.get("/ping", ping),
        ]
    )
    return app


async def serve(settings: PeerSettings, port: int) -> None:
    """Serves on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await until_stopped(runner)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.front", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    opts = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(serve(PeerSettings(), opts.port))


if __name__ == "__main__":
    main()
