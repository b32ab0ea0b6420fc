"""The synchronous client: :class:`Client`.

Requests are built and answers read in :mod:`wealthai_client.calls`, waits decided in
:mod:`wealthai_client.watching`, files read and written in :mod:`wealthai_client.files`; this
module only sends and waits, on httpx's own transport.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
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
from wealthai_client.watching import EVENTS, TaskUpdate, Watch

T = TypeVar("T")


class Client:
    """The platform's REST API, synchronously. ``url`` and ``api_key`` default to
    ``WEALTHAI_URL`` / ``WEALTHAI_API_KEY``, then the configuration file
    (:mod:`wealthai_client.config`). Use it as a context manager, or :meth:`close` it.

    ``timeout`` bounds each request (connect, each read and write); a wait is bounded by its
    own ``timeout``. ``transport`` replaces httpx's (tests, proxies)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        config: Config | None = None,
    ) -> None:
        self.config = config or resolve(url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=self.config.url,
            headers=calls.headers(self.config),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: calls.Call[T], content: Iterable[bytes] | None = None) -> T:
        request = self._http.build_request(
            call.method,
            call.path,
            params=dict(call.params),
            json=call.json,
            headers=dict(call.headers),
            content=content,
        )
        with transport_errors(request.url):
            response = self._http.send(request)
        return calls.answer(call, response)

    # -- tasks -----------------------------------------------------------------------------------

    def submit(
        self, task: SubmitRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SubmitResponse:
        """Submits a task (``{username?, password?, tenant?, data: [records]}``)."""
        return self._call(calls.submit(task, idempotency_key))

    def status(self, task_id: str) -> StatusResponse:
        return self._call(calls.status(task_id))

    def result(self, task_id: str) -> ResultResponse:
        return self._call(calls.result(task_id))

    def cancel(self, task_id: str) -> StatusResponse:
        return self._call(calls.cancel(task_id))

    def retry(self, task_id: str) -> StatusResponse:
        return self._call(calls.retry(task_id))

    def tasks(
        self,
        *,
        status: TaskStatusName | None = None,
        limit: int = 20,
        page_token: str | None = None,
        owner: str | None = None,
    ) -> TaskListResponse:
        """One page of tasks, newest first; pass ``next_page_token`` back for the next."""
        return self._call(
            calls.tasks(status=status, limit=limit, page_token=page_token, owner=owner)
        )

    def events(self, task_id: str, *, idle_s: float | None = None) -> Generator[TaskEventOut]:
        """The task's events as they happen, until it finishes (or the gateway ends the stream;
        with ``idle_s``, until no event came for that long)."""
        path = calls.events_path(task_id)
        timeout = httpx.Timeout(self._http.timeout.connect, read=idle_s)
        headers = {"Accept": "text/event-stream"}
        stream = self._http.stream("GET", path, headers=headers, timeout=timeout)
        with transport_errors(self._http.base_url), stream as response:
            if response.is_error:
                response.read()
                raise from_response(response)
            calls.check_event_stream(response)
            parser = EventParser()
            try:
                for line in response.iter_lines():
                    if (data := parser.feed(line)) is not None:
                        yield task_event(data)
            except httpx.ReadTimeout:
                return  # silent for idle_s

    def watch(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float | None = None,
        idle_s: float = 60.0,
    ) -> Iterator[TaskUpdate]:
        """The task's status now, then after each change until it finishes: from its event
        stream, else by polling (:mod:`wealthai_client.watching`)."""
        watch = Watch(
            task_id,
            timeout=timeout,
            poll_interval=poll_interval or self.poll_interval,
            idle_s=idle_s,
        )
        first = watch.seen(self.status(task_id), "start")
        assert first is not None
        yield first
        while not watch.done:
            if watch.mode != EVENTS:
                time.sleep(watch.next_poll())
                if update := self._reread(watch, "polling"):
                    yield update
                continue
            delivered = False
            stream = self.events(task_id, idle_s=watch.read_timeout())
            try:
                while not watch.done:
                    try:
                        next(stream)
                    except StopIteration:
                        watch.stream_ended(delivered)
                        break
                    except WealthAIError as exc:
                        watch.stream_failed(exc)
                        break
                    delivered = True
                    if update := self._reread(watch, "events"):
                        yield update
                    watch.remaining()
            finally:
                stream.close()

    def _reread(self, watch: Watch, source: Literal["events", "polling"]) -> TaskUpdate | None:
        try:
            return watch.seen(self.status(watch.task_id), source)
        except WealthAIError as exc:
            watch.poll_failed(exc)
            return None

    def wait(
        self, task_id: str, *, timeout: float | None = None, poll_interval: float | None = None
    ) -> StatusResponse:
        """Blocks until the task finished and returns its last status (WaitTimeout after
        ``timeout`` seconds)."""
        last = None
        for update in self.watch(task_id, timeout=timeout, poll_interval=poll_interval):
            last = update.status
        assert last is not None
        return last

    # -- files -----------------------------------------------------------------------------------

    def upload(
        self,
        source: files.Source | Iterable[bytes],
        *,
        name: str | None = None,
        content_type: str | None = None,
        temporary: bool = False,
        progress: files.Progress | None = None,
    ) -> FileOut:
        """Uploads a file (a path, bytes, or an iterable of byte chunks with a ``name``),
        streamed: never read whole. ``progress(done, total)`` follows the bytes sent."""
        upload = files.describe(source, name, content_type)
        call = calls.upload(upload.name, upload.content_type, upload.size, temporary)
        counter = files.Counter(upload.size, progress)
        with files.opened(source) as chunks:
            return self._call(call, content=(counter.add(bytes(c)) for c in chunks))

    def download(
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
        with transport_errors(self._http.base_url), self._http.stream("GET", path) as response:
            if response.is_error:
                response.read()
                raise from_response(response)
            sink = files.Sink(file_id, response, dest, progress)
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                return sink.finish()
            finally:
                sink.close()

    def files(
        self, *, limit: int = 100, page_token: str | None = None, owner: str | None = None
    ) -> FileListResponse:
        """One page of the caller's files, in file id order."""
        return self._call(calls.files(limit=limit, page_token=page_token, owner=owner))

    def delete_file(self, file_id: str) -> None:
        self._call(calls.delete_file(file_id))

    def file_url(self, file_id: str, *, expires_s: int | None = None) -> FileUrlResponse:
        """A URL that downloads the file straight from S3, without a key, until it expires."""
        return self._call(calls.file_url(file_id, expires_s))

    # -- API keys (admin) ------------------------------------------------------------------------

    def create_key(
        self, name: str, tenant: str, role: Literal["client", "admin"] = "client"
    ) -> CreatedKey:
        """A new key for ``<tenant>/<name>``; the answer is the only time ``key`` is shown."""
        return self._call(calls.create_key(name, tenant, role))

    def keys(self) -> KeyListResponse:
        return self._call(calls.list_keys())

    def revoke_key(self, key_id: str) -> ApiKeyOut:
        return self._call(calls.revoke_key(key_id))
