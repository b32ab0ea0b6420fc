"""The Celery peer's worker: a task runs one submitted task the way the design the platform
replaced did, on Celery 5 as its users set it up.

- Redis is the broker and the result backend; tasks are acknowledged late (``acks_late``: a
  worker that dies mid-task leaves it to be run again) and each worker thread takes one message
  at a time (``worker_prefetch_multiplier=1``); the pool is threads, 300 of them
  (``PEER_CONCURRENCY``), sized for work that waits on I/O.
- A task authenticates with the caller's platform login (one token per login, cached until it
  expires), writes its document to S3 (``processing``), runs its sections in parallel (each on a
  thread of a shared pool: create a conversation, send the prompt, poll every 2 s until
  answered), and writes its document again with the results (``completed`` or ``error``). It
  returns the final status, which the result backend keeps for the front's status calls.
- The platform is reached with ``requests`` (one pooled session, retries on 429 and 5xx with
  ``Retry-After`` honoured) and S3 with boto3: the synchronous clients of threaded workers.

:func:`make_app` builds the Celery app (the front uses it to send tasks);
:mod:`bench.peers.worker_app` is what ``celery -A`` loads.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from botocore.config import Config
from celery import Celery
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bench.peers import documents
from bench.peers.documents import Job
from bench.peers.settings import PeerSettings, unseal

TASK_NAME = "peer.run_task"
GENAI = "/magicplatform/v1/genai/conversation"
TOKEN_MARGIN_S = 60.0  # a cached token is renewed this long before it expires


class SectionFailed(Exception):
    """A section that ended without an answer; the message says why."""


def make_app(settings: PeerSettings) -> Celery:
    """The peer's Celery app, with its task registered."""
    app = Celery("peer", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.concurrency,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        task_default_queue="peer",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    runner = Runner(settings)

    def run_task(doc: dict[str, Any], sealed_password: str) -> dict[str, str]:
        return {"status": runner.run(doc, sealed_password)}

    app.task(name=TASK_NAME)(run_task)
    return app


class PlatformCalls:
    """The AI platform's calls over one pooled ``requests`` session, shared by every thread."""

    def __init__(self, settings: PeerSettings, pool: int) -> None:
        self._base = settings.platform_url.rstrip("/")
        self._timeout = settings.request_timeout_s
        self._session = requests.Session()
        retry = Retry(
            total=3,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _json(self, response: requests.Response, call: str) -> dict[str, Any]:
        if response.status_code != 200:
            raise SectionFailed(f"{call} answered {response.status_code}")
        return dict(response.json())

    def token(self, tenant: str, username: str, password: str) -> str:
        """A platform token for this login: the cached one, or a new one."""
        key = (tenant, username, hashlib.sha256(password.encode()).hexdigest())
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        answer = self._json(
            self._session.get(
                f"{self._base}/accesstoken/{tenant}",
                auth=(username, password),
                timeout=self._timeout,
            ),
            "authentication",
        )
        token = str(answer["access_token"])
        expires = time.monotonic() + max(0.0, float(answer["expires_in"]) - TOKEN_MARGIN_S)
        with self._lock:
            self._tokens[key] = (token, expires)
        return token

    def close(self) -> None:
        self._session.close()

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def create(self, token: str, asset_id: str) -> str:
        body = {"conversation_name": "AI Insights", "asset_version_id": asset_id}
        reply = self._session.post(
            f"{self._base}{GENAI}/create",
            json=body,
            headers=self._headers(token),
            timeout=self._timeout,
        )
        return str(self._json(reply, "create conversation")["conversation_id"])

    def send(self, token: str, conv_id: str, message: str) -> str:
        body = {"conversation_id": conv_id, "message": message}
        reply = self._session.post(
            f"{self._base}{GENAI}/addmessage/stream",
            json=body,
            headers=self._headers(token),
            timeout=self._timeout,
        )
        return str(self._json(reply, "send prompt")["message_id"])

    def poll(self, token: str, conv_id: str, message_id: str) -> dict[str, Any]:
        reply = self._session.get(
            f"{self._base}{GENAI}/response/{conv_id}/{message_id}",
            headers=self._headers(token),
            timeout=self._timeout,
        )
        return self._json(reply, "poll")


@dataclass
class Runner:
    """What a task does, with the clients every thread of the worker shares (made on first
    use, so the front, which only sends tasks, never makes them)."""

    settings: PeerSettings

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False

    def open(self) -> None:
        """Makes the shared clients (once; every later call returns at once)."""
        with self._lock:
            if self._ready:
                return
            s = self.settings
            # Three sections per task, every task of the pool at once.
            pool = 3 * s.concurrency
            self.platform = PlatformCalls(s, pool)
            self.sections = ThreadPoolExecutor(max_workers=pool, thread_name_prefix="section")
            self.s3 = boto3.session.Session().client(
                "s3",
                endpoint_url=s.s3_endpoint_url,
                region_name=s.s3_region,
                config=Config(
                    max_pool_connections=s.concurrency,
                    retries={"mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path" if s.s3_endpoint_url else "auto"},
                ),
            )
            self._ready = True

    def close(self) -> None:
        """Lets go of the shared clients (the next task makes them again)."""
        with self._lock:
            if not self._ready:
                return
            self.sections.shutdown(wait=True)
            self.platform.close()
            self.s3.close()
            self._ready = False

    def put(self, doc: dict[str, Any]) -> None:
        self.s3.put_object(
            Bucket=self.settings.bucket,
            Key=documents.key_of(doc["task_id"]),
            Body=json.dumps(doc).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )

    def run(self, doc: dict[str, Any], sealed_password: str) -> str:
        """Runs the task of ``doc`` to its end; returns its final status."""
        self.open()
        started = time.monotonic()
        password = unseal(self.settings, sealed_password)
        token = self.platform.token(doc["tenant"], doc["username"], password)
        doc = documents.started(doc, (time.monotonic() - started) * 1000)
        self.put(doc)
        jobs = documents.jobs_in(doc)
        outcomes = list(self.sections.map(lambda job: self.section(token, job), jobs))
        doc = documents.finished(
            doc, {job.section: out for job, out in zip(jobs, outcomes, strict=True)}
        )
        self.put(doc)
        return str(doc["status"])

    def section(self, token: str, job: Job) -> dict[str, Any]:
        """One section: create, send, poll every ``poll_s`` until answered (or timed out)."""
        started = time.monotonic()
        out: dict[str, Any] = {
            "status": "error",
            "response": "",
            "cost": 0.0,
            "conv_id": "",
            "message_id": "",
            "error": "",
        }
        try:
            out["conv_id"] = self.platform.create(token, job.asset_id)
            out["message_id"] = self.platform.send(token, out["conv_id"], job.prompt)
            deadline = started + self.settings.section_timeout_s
            while True:
                time.sleep(self.settings.poll_s)
                answer = self.platform.poll(token, out["conv_id"], out["message_id"])
                if answer["status"] == "SUCCESS":
                    out |= {"status": "completed", "response": answer["response"]}
                    out["cost"] = float(answer.get("cost", 0.0))
                    break
                if answer["status"] != "IN_PROGRESS":
                    raise SectionFailed(str(answer.get("error") or "the platform failed"))
                if time.monotonic() > deadline:
                    raise SectionFailed(f"no answer within {self.settings.section_timeout_s:g} s")
        except (SectionFailed, requests.RequestException, ValueError, KeyError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        out["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return out
