"""A counting TCP proxy in front of the S3 endpoint: what storage_svc really asks S3 for.

``python -m bench.s3count --listen P --upstream Q --control C`` forwards every byte between
its clients (storage_svc) and the S3 server on port Q untouched. On the way in it reads only
the request lines and headers (bodies are skipped by ``Content-Length`` or chunk sizes) and
counts each request by operation and by the kind of key it names:

=========  ===========================================  ==============================
operation  request                                      kind of key
=========  ===========================================  ==============================
PUT        PUT of an object                             ``task``: ``…/task_*.json``
GET        GET of an object                             ``lease``: ``…/_leases/…``
LIST       GET of the bucket with ``list-type=2``       ``idempotency``: ``…/_idempotency/…``
DELETE     DELETE of an object                          ``other``: anything else (a LIST
HEAD       HEAD (object or bucket)                      is of the kind of its ``prefix``)
other      anything else (bucket set-up, POST …)
=========  ===========================================  ==============================

It also keeps, per task document, the sequence of its operations (``"PPGPPG"``), so a reader
can tell reads made while the task ran (before its last write) from reads made after it, and
the number of connections its clients opened (a client that keeps its connections alive opens
few).

The control port answers ``GET /counts`` (JSON: ``requests`` kind -> operation -> count,
``task_ops`` key -> operations, ``connections``) and ``POST /reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from urllib.parse import parse_qs, unquote, urlsplit

OPS = ("PUT", "GET", "LIST", "DELETE", "HEAD", "other")
KEY_KINDS = ("task", "lease", "idempotency", "other")
LETTER = {"PUT": "P", "GET": "G", "LIST": "L", "DELETE": "D", "HEAD": "H", "other": "o"}


def classify(method: str, target: str) -> tuple[str, str, str]:
    """(operation, kind of key, key) of one path-style S3 request line."""
    parts = urlsplit(target)
    key = unquote(parts.path).lstrip("/").partition("/")[2]
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET" and not key and "list-type" in query:
        op, key = "LIST", query.get("prefix", [""])[0]
    elif method in ("PUT", "GET", "DELETE") and key and not query.keys() - {"x-id"}:
        op = method
    elif method == "HEAD":
        op = "HEAD"
    else:
        op = "other"
    if "/_leases/" in f"/{key}":
        kind = "lease"
    elif "/_idempotency/" in f"/{key}":
        kind = "idempotency"
    elif key.rpartition("/")[2].startswith("task_") and op != "other":
        kind = "task"
    else:
        kind = "other"
    return op, kind, key


class Counts:
    """Requests by kind of key and operation, and each task document's operations."""

    def __init__(self) -> None:
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.task_ops: defaultdict[str, str] = defaultdict(str)
        self.connections = 0

    def reset(self) -> None:
        self.requests.clear()
        self.task_ops.clear()
        self.connections = 0

    def add(self, method: str, target: str) -> None:
        op, kind, key = classify(method, target)
        self.requests[kind][op] += 1
        if kind == "task" and op != "LIST":
            self.task_ops[key] += LETTER[op]

    def as_json(self) -> dict[str, object]:
        return {
            "requests": {k: {op: self.requests[k][op] for op in OPS} for k in KEY_KINDS},
            "task_ops": dict(self.task_ops),
            "connections": self.connections,
        }


async def _pump_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts
) -> None:
    """Client -> S3: forwards everything, counting each request as its headers pass."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                writer.write(exc.partial)
            return
        writer.write(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, *_ = [*lines[0].split(" "), "", ""]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        counts.add(method, target)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await _forward_chunks(reader, writer)
        else:
            left = int(headers.get("content-length", "0") or 0)
            while left > 0:
                data = await reader.read(min(left, 65536))
                if not data:
                    return
                writer.write(data)
                left -= len(data)
        await writer.drain()


async def _forward_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Forwards one chunked body: sized chunks, the empty last one, then trailers."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(line)
            writer.write(line)
            return
        writer.write(await reader.readexactly(size + 2))


async def _pump_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """S3 -> client: bytes as they come."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _proxy(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    upstream: int,
    counts: Counts,
) -> None:
    counts.connections += 1
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        client_w.close()
        return
    pumps = [
        asyncio.create_task(_pump_requests(client_r, server_w, counts)),
        asyncio.create_task(_pump_raw(server_r, client_w)),
    ]
    with contextlib.suppress(Exception):
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    for pump in pumps:
        pump.cancel()
    for writer in (client_w, server_w):
        writer.close()
    await asyncio.gather(*pumps, return_exceptions=True)


async def _control(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts
) -> None:
    """``GET /counts`` or ``POST /reset``, one request per connection."""
    with contextlib.suppress(Exception):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, path, *_ = head.split(" ")
        if method == "POST" and path == "/reset":
            counts.reset()
        body = json.dumps(counts.as_json()).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    writer.close()


async def serve(listen: int, upstream: int, control: int) -> None:
    """Serves until cancelled. The control port is bound first: once ``listen`` accepts
    connections, counts can be read."""
    counts = Counts()
    ctl = await asyncio.start_server(lambda r, w: _control(r, w, counts), "127.0.0.1", control)
    proxy = await asyncio.start_server(
        lambda r, w: _proxy(r, w, upstream, counts), "127.0.0.1", listen
    )
    async with ctl, proxy:
        await asyncio.gather(ctl.serve_forever(), proxy.serve_forever())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.s3count", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--listen", type=int, required=True, help="port storage_svc talks to")
    parser.add_argument("--upstream", type=int, required=True, help="port of the S3 server")
    parser.add_argument("--control", type=int, required=True, help="port of GET /counts")
    opts = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(opts.listen, opts.upstream, opts.control))


if __name__ == "__main__":
    main()
