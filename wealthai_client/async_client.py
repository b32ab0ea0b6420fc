"""The asynchronous client: :class:`AsyncClient`, the same calls as
:class:`~wealthai_client.client.Client` awaited, on the transport of
:mod:`wealthai_client.transport`.

Requests are built and answers read in :mod:`wealthai_client.calls`, waits decided in
:mod:`wealthai_client.watching`, files read and written in :mod:`wealthai_client.files`; this
module only sends and waits. Reading a file to upload and writing one downloaded happen in a
worker thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from gateway.models import (
    ApiKeyOut,
    CreatedKey,
    FileListResponse,
    FileOut,
    FileUrlResponse,
    KeyListResponse,
    ResultResponse,
    StatusResponse,
    SubmitRequest,
    SubmitResponse,
    TaskEventOut,
    TaskListResponse,
    TaskStatusName,
)
from wealthai_client import calls, files
from wealthai_client.config import Config, resolve
from wealthai_client.errors import WealthAIError, from_response, transport_errors
from wealthai_client.sse import EventParser, task_event
from wealthai_client.transport import async_transport
from wealthai_client.watching import EVENTS, TaskUpdate, Watch

T = TypeVar("T")


class AsyncClient:
    """The platform's REST API, awaited. Arguments as :class:`~wealthai_client.client.Client`;
    use it as an async context manager, or :meth:`aclose` it."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        config: Config | None = None,
    ) -> None:
        self.config = config or resolve(url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.config.url,
            headers=calls.headers(self.config),
            timeout=timeout,
            transport=transport or async_transport(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _call(self, call: calls.Call[T], content: AsyncIterable[bytes] | None = None) -> T:
        request = self._http.build_request(
            call.method,
            call.path,
            params=dict(call.params),
            json=call.json,
            headers=dict(call.headers),
            content=content,
        )
        with transport_errors(request.url):
            response = await self._http.send(request)
        return calls.answer(call, response)

    # -- tasks -----------------------------------------------------------------------------------

    async def submit(
        self, task: SubmitRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SubmitResponse:
        """Submits a task (``{username?, password?, tenant?, data: [records]}``)."""
        return await self._call(calls.submit(task, idempotency_key))

    async def status(self, task_id: str) -> StatusResponse:
        return await self._call(calls.status(task_id))

    async def result(self, task_id: str) -> ResultResponse:
        return await self._call(calls.result(task_id))

    async def cancel(self, task_id: str) -> StatusResponse:
        return await self._call(calls.cancel(task_id))

    async def retry(self, task_id: str) -> StatusResponse:
        return await self._call(calls.retry(task_id))

    async def tasks(
        self,
        *,
        status: TaskStatusName | None = None,
        limit: int = 20,
        page_token: str | None = None,
        owner: str | None = None,
    ) -> TaskListResponse:
        """One page of tasks, newest first; pass ``next_page_token`` back for the next."""
        return await self._call(
            calls.tasks(status=status, limit=limit, page_token=page_token, owner=owner)
        )

    async def events(
        self, task_id: str, *, idle_s: float | None = None
    ) -> AsyncGenerator[TaskEventOut]:
        """The task's events as they happen, until it finishes (or the gateway ends the stream;
        with ``idle_s``, until no event came for that long)."""
        path = calls.events_path(task_id)
        timeout = httpx.Timeout(self._http.timeout.connect, read=idle_s)
        headers = {"Accept": "text/event-stream"}
        with transport_errors(self._http.base_url):
            async with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    await response.aread()
                    raise from_response(response)
                calls.check_event_stream(response)
                parser = EventParser()
                try:
                    async for line in response.aiter_lines():
                        if (data := parser.feed(line)) is not None:
                            yield task_event(data)
                except httpx.ReadTimeout:
                    return  # silent for idle_s

    async def watch(
        self,
        task_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as the sync client's
        poll_interval: float | None = None,
        idle_s: float = 60.0,
    ) -> AsyncIterator[TaskUpdate]:
        """The task's status now, then after each change until it finishes: from its event
        stream, else by polling (:mod:`wealthai_client.watching`)."""
        watch = Watch(
            task_id,
            timeout=timeout,
            poll_interval=poll_interval or self.poll_interval,
            idle_s=idle_s,
        )
        first = watch.seen(await self.status(task_id), "start")
        assert first is not None
        yield first
        while not watch.done:
            if watch.mode != EVENTS:
                await asyncio.sleep(watch.next_poll())
                if update := await self._reread(watch, "polling"):
                    yield update
                continue
            delivered = False
            stream = self.events(task_id, idle_s=watch.read_timeout())
            try:
                while not watch.done:
                    try:
                        await anext(stream)
                    except StopAsyncIteration:
                        watch.stream_ended(delivered)
                        break
                    except WealthAIError as exc:
                        watch.stream_failed(exc)
                        break
                    delivered = True
                    if update := await self._reread(watch, "events"):
                        yield update
                    watch.remaining()
            finally:
                await stream.aclose()

    async def _reread(
        self, watch: Watch, source: Literal["events", "polling"]
    ) -> TaskUpdate | None:
        try:
            return watch.seen(await self.status(watch.task_id), source)
        except WealthAIError as exc:
            watch.poll_failed(exc)
            return None

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as the sync client's
        poll_interval: float | None = None,
    ) -> StatusResponse:
        """Waits until the task finished and returns its last status (WaitTimeout after
        ``timeout`` seconds)."""
        last = None
        async for update in self.watch(task_id, timeout=timeout, poll_interval=poll_interval):
            last = update.status
        assert last is not None
        return last

    # -- files -----------------------------------------------------------------------------------

    async def upload(
        self,
        source: files.Source | Iterable[bytes] | AsyncIterable[bytes],
        *,
        name: str | None = None,
        content_type: str | None = None,
        temporary: bool = False,
        progress: files.Progress | None = None,
    ) -> FileOut:
        """Uploads a file (a path, bytes, or a sync or async iterable of byte chunks with a
        ``name``), streamed: never read whole. ``progress(done, total)`` follows the bytes
        sent."""
        if isinstance(source, AsyncIterable):
            upload = files.describe(source, name, content_type)
            counter = files.Counter(None, progress)
            call = calls.upload(upload.name, upload.content_type, None, temporary)
            return await self._call(call, content=_counted(source, counter))
        upload = files.describe(source, name, content_type)
        call = calls.upload(upload.name, upload.content_type, upload.size, temporary)
        counter = files.Counter(upload.size, progress)
        with files.opened(source) as chunks:
            return await self._call(call, content=_read(chunks, counter))

    async def download(
        self,
        file_id: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: files.Progress | None = None,
    ) -> files.Downloaded:
        """Downloads a file, streamed to ``dest`` (a path, or a folder to put it in under its
        own name; the current folder by default); its size and SHA-256 are checked before it
        takes the destination's name."""
        path = calls.download_path(file_id)
        with transport_errors(self._http.base_url):
            async with self._http.stream("GET", path) as response:
                if response.is_error:
                    await response.aread()
                    raise from_response(response)
                sink = files.Sink(file_id, response, dest, progress)
                try:
                    async for chunk in response.aiter_bytes(files.CHUNK_BYTES):
                        await asyncio.to_thread(sink.write, chunk)
                    return await asyncio.to_thread(sink.finish)
                finally:
                    sink.close()

    async def files(
        self, *, limit: int = 100, page_token: str | None = None, owner: str | None = None
    ) -> FileListResponse:
        """One page of the caller's files, in file id order."""
        return await self._call(calls.files(limit=limit, page_token=page_token, owner=owner))

    async def delete_file(self, file_id: str) -> None:
        await self._call(calls.delete_file(file_id))

    async def file_url(self, file_id: str, *, expires_s: int | None = None) -> FileUrlResponse:
        """A URL that downloads the file straight from S3, without a key, until it expires."""
        return await self._call(calls.file_url(file_id, expires_s))

    # -- API keys (admin) ------------------------------------------------------------------------

    async def create_key(
        self, name: str, tenant: str, role: Literal["client", "admin"] = "client"
    ) -> CreatedKey:
        """A new key for ``<tenant>/<name>``; the answer is the only time ``key`` is shown."""
        return await self._call(calls.create_key(name, tenant, role))

    async def keys(self) -> KeyListResponse:
        return await self._call(calls.list_keys())

    async def revoke_key(self, key_id: str) -> ApiKeyOut:
        return await self._call(calls.revoke_key(key_id))


async def _read(chunks: Iterator[bytes], counter: files.Counter) -> AsyncIterator[bytes]:
    """Chunks read in a worker thread (a file's reads wait on the disk), counted."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield counter.add(bytes(chunk))


async def _counted(chunks: AsyncIterable[bytes], counter: files.Counter) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield counter.add(bytes(chunk))
