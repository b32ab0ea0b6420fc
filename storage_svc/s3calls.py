"""The one S3 client of storage_svc and the way every call to it is made.

:class:`S3Calls` owns a long-lived aioboto3 client and runs each call through one bounded retry
loop (exponential backoff with full jitter, :class:`~common.backoff.Backoff`). botocore's own
retries are switched off so the two layers never multiply. Failures become the platform's
errors (:mod:`common.errors`)::

    S3 answer                                              platform error
    NoSuchKey, 404                                         NotFound
    PreconditionFailed (412), ConditionalRequestConflict   Conflict
    SlowDown, Throttling, 5xx, connect/read timeouts       retried, then Unavailable
    NoSuchBucket                                           Unavailable (deployment problem)
    AccessDenied, 403, missing/bad/expired credentials     Internal (logged with the S3 code)
    anything else                                          Internal (logged)

Messages carry the S3 error code and S3's own message, never a credential or a signature.

On top of :meth:`S3Calls.call`, the JSON objects of the store (task documents and namespaced
objects alike) are read, written and deleted through one code path: :meth:`S3Calls.read`,
:meth:`S3Calls.read_many`, :meth:`S3Calls.put_json` and :meth:`S3Calls.delete`; the empty
markers of the owner index are written by :meth:`S3Calls.put_empty`.

**Compare-and-swap.** A write may carry the version (ETag) it replaces (``If-Match``) or demand
that no object exists yet (``If-None-Match: *``). S3 evaluates the condition atomically, so of
many writers holding the same version exactly one succeeds and the others get
:class:`~common.errors.Conflict`. If a write whose earlier attempt timed out is rejected on
retry, :meth:`S3Calls.put_json` re-reads the object: when it holds exactly our bytes, that
earlier attempt did land and its version is returned instead of a false conflict.

**Small bodies go past botocore.** A PutObject of a body under :data:`EXPECT_CONTINUE_MIN_BYTES`
(task documents, markers, every JSON object of the store) is signed by botocore's signer and
sent by aiohttp (:mod:`storage_svc.s3direct`): a third of the CPU of the same call through the
client. Its errors are botocore's, so everything below applies to it alike.

**Small bodies go at once.** botocore asks for ``Expect: 100-continue`` on every PUT with a
body, so the server must answer "go on" before the body is sent: a round trip more per write,
and servers that answer an empty body's request without reading on (SeaweedFS, for the owner
index's markers) close the connection after it. A body under 1 MiB is sent without it
(:func:`send_small_bodies_at_once`); multipart parts, larger, keep it.

**Metrics.** Every S3 request (each attempt of a call) is counted and timed by operation
(``GetObject``, ``PutObject`` …) and outcome: ``ok``, or the :class:`Failure` it was sorted
into (``not_found``, ``conflict``, ``transient``, ``no_bucket``, ``denied``, ``other``),
``refused`` when the attempt itself judged S3's answer a failure (a bucket name taken), or
``cancelled`` when its caller went away first.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, NamedTuple, TypeVar

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import create_loader
from botocore.utils import determine_content_length
from prometheus_client import Counter, Histogram

from common.backoff import Backoff
from common.errors import AppError, Conflict, Internal, NotFound, Unavailable
from common.metrics import LATENCY_BUCKETS
from storage_svc.s3direct import DirectPuts
from storage_svc.settings import StorageSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchLifecycleConfiguration"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
    }
)
# Errors raised while sending a request or reading an answer: the call may be retried.
_TRANSPORT_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError, TimeoutError)

S3_REQUESTS = Counter(
    "wealthai_s3_requests_total",
    "S3 requests storage_svc made (each attempt), by operation and outcome.",
    ["operation", "outcome"],
)
S3_DURATION = Histogram(
    "wealthai_s3_request_duration_seconds",
    "Time of one S3 request (one attempt, without the backoff before a retry), by operation "
    "and outcome.",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)


class Stored(NamedTuple):
    """The body of one stored object and its version (ETag)."""

    body: bytes
    version: str


class Failure(enum.Enum):
    """What kind of failure an exception from the S3 client is."""

    NOT_FOUND = "not found"
    CONFLICT = "conflict"
    TRANSIENT = "transient"
    NO_BUCKET = "no bucket"
    DENIED = "denied"
    OTHER = "other"


def error_code(exc: ClientError) -> str:
    """The S3 error code of a client error (``NoSuchKey``, ``SlowDown``, ``404`` …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: BaseException) -> Failure:
    """Sorts an exception from the S3 client into a :class:`Failure`."""
    if isinstance(exc, _TRANSPORT_ERRORS):
        return Failure.TRANSIENT
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Failure.DENIED
    if not isinstance(exc, ClientError):
        return Failure.OTHER
    code = error_code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "NoSuchBucket":
        return Failure.NO_BUCKET
    if code in _CONFLICT or status == 412:
        return Failure.CONFLICT
    if code in _NOT_FOUND:
        return Failure.NOT_FOUND
    if code in _THROTTLED or status in (429, 503) or status >= 500:
        return Failure.TRANSIENT
    if code in _DENIED or status == 403:
        return Failure.DENIED
    if status == 404:
        return Failure.NOT_FOUND
    return Failure.OTHER


def describe(exc: BaseException) -> str:
    """A short, credential-free description of a failed S3 call."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = str(error.get("Message") or "").strip()
        return f"{error_code(exc)}{': ' + message if message else ''}"
    if isinstance(exc, BotoCoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def resolve_endpoints_by_bucket(client: Any) -> bool:
    """Lets ``client`` resolve an object call's endpoint without the object's key, when S3's
    endpoint rules never read the key; True when it was changed.

    botocore resolves every call's endpoint by evaluating S3's endpoint rule set on the call's
    parameters, and caches the result by those parameters. They include the object key (a
    "context parameter" of every object call), so each new key misses the cache and the rule
    set is evaluated again: 15-20 % of the CPU of a PutObject measured here. The rules do not
    read the key (checked here against the rule set installed, so a release whose rules do keeps
    it), so the endpoint of every call on a bucket is the same whatever the key: without the
    key in the parameters, all calls on the bucket share one cache entry.
    """
    resolver = getattr(client, "_ruleset_resolver", None)
    params = getattr(resolver, "_param_definitions", None) if resolver is not None else None
    if resolver is None or not isinstance(params, dict) or "Key" not in params:
        return False
    rules = create_loader().load_service_model("s3", "endpoint-rule-set-1")
    if '"ref": "Key"' in json.dumps(rules):
        return False
    resolver._param_definitions = {name: p for name, p in params.items() if name != "Key"}
    return True


# Bodies smaller than this are sent with their request, without waiting for "100 Continue".
EXPECT_CONTINUE_MIN_BYTES = 1024 * 1024
# PutObject's parameters for the headers :meth:`S3Calls._put` takes.
_PUT_PARAMS = {
    "Content-Type": "ContentType",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "If-Match": "IfMatch",
    "If-None-Match": "IfNoneMatch",
}


def _send_small_body_at_once(params: dict[str, Any], **_: Any) -> None:
    headers = params.get("headers", {})
    if "Expect" in headers:
        size = determine_content_length(params.get("body"))
        if size is not None and size < EXPECT_CONTINUE_MIN_BYTES:
            del headers["Expect"]


def send_small_bodies_at_once(client: Any) -> None:
    """Makes ``client`` send a request body under :data:`EXPECT_CONTINUE_MIN_BYTES` with its
    headers instead of asking for ``100 Continue`` first (botocore's default for every PUT).

    Measured against SeaweedFS, PUTs of a 1.5 KB document and of an empty marker in turn, 16 at
    a time: 2.6-3.0 → 1.8-2.5 ms of client CPU and 1.6 → 1.2-1.3 ms of the server's per PUT,
    and a new connection for 1 PUT in 2 → 1 in 100 (the empty ones closed theirs)."""
    client.meta.events.register_last("before-call.s3", _send_small_body_at_once)


class S3Calls:
    """One long-lived S3 client for one bucket, and :meth:`call` to use it with retries."""

    def __init__(self, settings: StorageSettings, session: Any = None) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        # One aioboto3.Session may serve several clients; it loads the S3 model only once.
        self._session: Any = session
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._puts: DirectPuts | None = None
        # Shared by every listing, so concurrent list calls together stay within the bound.
        self._reads = asyncio.Semaphore(settings.list_get_concurrency)
        self._backoff = Backoff(settings.s3_backoff_base_s, settings.s3_backoff_max_s)

    @property
    def client(self) -> Any:
        """The aioboto3 S3 client; :meth:`open` first."""
        if self._client is None:
            raise RuntimeError("the S3 client is not open; call open() first")
        return self._client

    async def open(self) -> None:
        """Creates the client; credentials come from the standard AWS chain."""
        if self._client is not None:
            return
        s = self.settings
        config = AioConfig(
            region_name=s.s3_region,
            connect_timeout=s.s3_connect_timeout_s,
            read_timeout=s.s3_read_timeout_s,
            # Our own loop in call() retries; botocore retrying too would multiply attempts.
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=s.s3_max_connections,
            # Pre-signed URLs too are SigV4: expiry bounded to 7 days and headers (SSE) signed.
            signature_version="s3v4",
            # Local S3-compatible servers are reached by address, so bucket names cannot be
            # host names there.
            s3={"addressing_style": "path" if s.s3_endpoint_url else "auto"},
        )
        stack = AsyncExitStack()
        if self._session is None:
            self._session = aioboto3.Session()
        self._client = await stack.enter_async_context(
            self._session.client(
                "s3", endpoint_url=s.s3_endpoint_url, region_name=s.s3_region, config=config
            )
        )
        self._stack = stack
        resolve_endpoints_by_bucket(self._client)
        send_small_bodies_at_once(self._client)
        self._puts = await DirectPuts.open(self._client, self._session, self.bucket)
        if self._puts is None:
            logger.info(
                "S3 PUTs of small bodies go through the client: the bucket is reached "
                "through a proxy, or the client shares no connections"
            )
        logger.info(
            "S3 client ready: bucket %s, region %s, endpoint %s",
            self.bucket,
            s.s3_region,
            s.s3_endpoint_url or "AWS",
        )

    async def close(self) -> None:
        """Closes the client and its connection pool."""
        stack, self._stack, self._client, self._puts = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def call(
        self,
        op: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        not_found: str | None = None,
        conflict: str | None = None,
    ) -> T:
        """Runs ``attempt`` (one S3 request ``op``), retrying transient failures.

        ``not_found`` and ``conflict`` are the messages of the NotFound / Conflict raised when
        S3 answers so; other failures get messages that name ``op`` and the S3 error code.
        """
        s = self.settings
        for number in range(1, s.s3_max_attempts + 1):
            try:
                return await _counted(op, attempt)
            except AppError:
                raise
            except Exception as exc:
                failure = classify(exc)
                if failure is not Failure.TRANSIENT:
                    raise self._error(op, exc, failure, not_found, conflict) from exc
                if number == s.s3_max_attempts:
                    logger.warning(
                        "S3 %s failed %d times, giving up: %s", op, number, describe(exc)
                    )
                    raise Unavailable(f"S3 unavailable: {op} failed: {describe(exc)}") from exc
                delay = self._backoff.delay(number)
                logger.warning(
                    "S3 %s failed (%s); attempt %d of %d in %.2fs",
                    op,
                    describe(exc),
                    number + 1,
                    s.s3_max_attempts,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: s3_max_attempts >= 1")

    async def read(self, key: str) -> Stored | None:
        """The object at ``key`` and its version, or None when there is none."""
        client = self.client

        async def attempt() -> Stored:
            answer = await client.get_object(Bucket=self.bucket, Key=key)
            async with answer["Body"] as body:
                data = await body.read()
            return Stored(data, str(answer["ETag"]))

        try:
            return await self.call("GetObject", attempt)
        except NotFound:
            return None

    async def read_many(self, keys: list[str]) -> list[Stored | None]:
        """:meth:`read` of every key, concurrently but at most ``list_get_concurrency`` at
        once (across all callers); results in the order of ``keys``."""

        async def read(key: str) -> Stored | None:
            async with self._reads:
                return await self.read(key)

        return list(await asyncio.gather(*(read(key) for key in keys)))

    async def put_json(
        self,
        key: str,
        body: bytes,
        *,
        what: str,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Writes a JSON object (SSE AES256) under the given precondition; returns its version.

        ``what`` names the object in error messages (``task task_…``). A lost compare-and-swap,
        including ``if_match`` on an object deleted meanwhile, raises :class:`Conflict`.
        """
        headers = {"Content-Type": "application/json", "x-amz-server-side-encryption": "AES256"}
        if if_match:
            headers["If-Match"] = if_match
            conflict = _changed(what, if_match)
        elif if_none_match:
            headers["If-None-Match"] = "*"
            conflict = f"{what} already exists"
        else:
            conflict = None
        put = self._put(key, body, headers)
        attempts = 0

        async def attempt() -> str:
            nonlocal attempts
            attempts += 1
            return await put()

        try:
            return await self.call("PutObject", attempt, conflict=conflict)
        except NotFound:
            # If-Match on a key that is gone: someone deleted the object meanwhile.
            raise Conflict(f"{conflict}, but it no longer exists") from None
        except Conflict:
            if attempts > 1:
                # An earlier attempt may have landed before its answer was lost.
                stored = await self.read(key)
                if stored is not None and stored.body == body:
                    logger.info("%s: write landed on an earlier attempt", what)
                    return stored.version
            raise

    async def put_empty(self, key: str) -> None:
        """Writes an empty object (SSE AES256), unconditionally: a marker whose key says all
        there is to say, so writing it twice is writing it once."""
        await self.call(
            "PutObject", self._put(key, b"", {"x-amz-server-side-encryption": "AES256"})
        )

    def _put(self, key: str, body: bytes, headers: dict[str, str]) -> Callable[[], Awaitable[str]]:
        """One PutObject of ``body`` at ``key`` with ``headers`` (S3's names), answering the new
        version: past botocore when the body is small (:mod:`storage_svc.s3direct`)."""
        client, puts = self.client, self._puts
        if puts is not None and len(body) < EXPECT_CONTINUE_MIN_BYTES:
            return lambda: puts.put(key, body, headers)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        for name, value in headers.items():
            kwargs[_PUT_PARAMS[name]] = value

        async def put() -> str:
            return str((await client.put_object(**kwargs))["ETag"])

        return put

    async def delete(self, key: str, *, what: str, if_match: str | None = None) -> None:
        """Deletes the object at ``key``, only at version ``if_match`` if given.

        With ``if_match`` a missing object is :class:`NotFound` and another version
        :class:`Conflict`; without it deleting a missing object succeeds (idempotent).
        """
        client = self.client
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            kwargs["IfMatch"] = if_match
        await self.call(
            "DeleteObject",
            lambda: client.delete_object(**kwargs),
            not_found=f"{what} not found",
            conflict=_changed(what, if_match or ""),
        )

    def _error(
        self,
        op: str,
        exc: BaseException,
        failure: Failure,
        not_found: str | None,
        conflict: str | None,
    ) -> AppError:
        if failure is Failure.NOT_FOUND:
            return NotFound(not_found or f"S3 {op}: object not found")
        if failure is Failure.CONFLICT:
            return Conflict(conflict or f"S3 {op}: precondition failed ({describe(exc)})")
        if failure is Failure.NO_BUCKET:
            logger.error("S3 %s: bucket %s does not exist", op, self.bucket)
            return Unavailable(f"S3 unavailable: bucket {self.bucket} does not exist")
        if failure is Failure.DENIED:
            logger.error(
                "S3 refused %s on bucket %s (%s): check the credentials and the IAM policy "
                "of this service",
                op,
                self.bucket,
                describe(exc),
            )
            return Internal(f"S3 refused access ({op}); see the storage service log")
        logger.error("S3 %s on bucket %s failed: %s", op, self.bucket, describe(exc))
        return Internal(f"S3 {op} failed; see the storage service log")


async def _counted(op: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Runs one S3 request and counts and times it by ``op`` and outcome."""
    outcome = "cancelled"
    started = time.perf_counter()
    try:
        answer = await attempt()
        outcome = "ok"
        return answer
    except AppError:
        outcome = "refused"  # the attempt itself judged S3's answer a failure
        raise
    except Exception as exc:
        outcome = classify(exc).name.lower()
        raise
    finally:
        S3_REQUESTS.labels(op, outcome).inc()
        S3_DURATION.labels(op, outcome).observe(time.perf_counter() - started)


def _changed(what: str, version: str) -> str:
    """The message of a compare-and-swap lost to another writer."""
    return f"{what} was changed by another writer: version {version} expected"
