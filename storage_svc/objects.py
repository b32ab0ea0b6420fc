"""ObjectStore: small JSON objects in namespaces (orchestrator leases, idempotency keys).

Layout under the task prefix (``tasks/`` by default)::

    tasks/_leases/orch-1.json        one lease per orchestrator replica (SSE AES256)
    tasks/_idempotency/<key>.json    one record per idempotency key
    tasks/_api_keys/<key_id>.json    one record per API key (its hash, never the key)

Writes take the same preconditions as task documents and go through the same code path
(:meth:`~storage_svc.s3calls.S3Calls.put_json`): ``If-Match`` / ``If-None-Match: *``, a lost
compare-and-swap is :class:`~common.errors.Conflict`, and a write whose answer was lost but that
did land is recognised on retry. The namespaces in :data:`EXPIRING` expire with the task
documents' lifecycle rule unless rewritten (:mod:`storage_svc.bucket`); API keys never expire:
a key lives until an admin revokes it. Task listings never see these objects, since tasks are
listed by the day prefixes ``<prefix>task_YYYYMMDD``.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, NamedTuple

from common.errors import InvalidInput, NotFound
from storage_svc.documents import (
    OBJECT_NAME_RE,
    check_object_body,
    check_object_name,
    check_page_size,
    check_precondition,
    decode_objects_token,
    encode_objects_token,
)
from storage_svc.s3calls import S3Calls

logger = logging.getLogger(__name__)

# The most keys one ListObjectsV2 request returns, and so the largest page.
MAX_OBJECTS_PAGE = 1000


class Namespace(enum.StrEnum):
    """Where an object lives: ``<prefix>_<namespace>/<name>.json``."""

    LEASES = "leases"
    IDEMPOTENCY = "idempotency"
    API_KEYS = "api_keys"
    SEALS = "seals"


EXPIRING: tuple[Namespace, ...] = (Namespace.LEASES, Namespace.IDEMPOTENCY, Namespace.SEALS)
"""The namespaces the retention rule expires: a dead replica's lease, an old idempotency key, a
seal index entry its sweeper never reached."""


def namespace_prefix(prefix: str, namespace: Namespace) -> str:
    """The key prefix of a namespace under the task prefix, ``<prefix>_<namespace>/``."""
    return f"{prefix}_{namespace.value}/"


class StoredObject(NamedTuple):
    """One object of a namespace: its name, JSON body and version (ETag)."""

    name: str
    body: bytes
    version: str


ObjectPage = tuple[list[StoredObject], str]


class ObjectStore:
    """Namespaced objects in the bucket of an :class:`S3Calls`, whose client it borrows (the
    owner, usually the :class:`~storage_svc.store.TaskStore`, opens and closes it)."""

    def __init__(self, s3: S3Calls) -> None:
        self.s3 = s3
        self._prefix = s3.settings.s3_prefix

    def namespace_prefix(self, namespace: Namespace) -> str:
        """The key prefix of a namespace, ``<prefix>_<namespace>/``."""
        return namespace_prefix(self._prefix, _namespace(namespace))

    def object_key(self, namespace: Namespace, name: str) -> str:
        """The key of an object, ``<prefix>_<namespace>/<name>.json``."""
        return f"{self.namespace_prefix(namespace)}{name}.json"

    async def put(
        self,
        namespace: Namespace,
        name: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Writes an object; returns its new version.

        ``if_match`` writes only over that version, ``if_none_match`` only if no object exists;
        otherwise :class:`~common.errors.Conflict`. Name and body are checked first
        (InvalidInput).
        """
        key = self._key(namespace, name)
        check_object_body(name, body)
        check_precondition(if_match, if_none_match)
        version = await self.s3.put_json(
            key,
            body,
            what=_what(namespace, name),
            if_match=if_match,
            if_none_match=if_none_match,
        )
        logger.debug("object %s stored: version %s", _what(namespace, name), version)
        return version

    async def get(self, namespace: Namespace, name: str) -> tuple[bytes, str]:
        """The body of an object and its version; NotFound when there is none."""
        found = await self.s3.read(self._key(namespace, name))
        if found is None:
            raise NotFound(f"{_what(namespace, name)} not found")
        return found.body, found.version

    async def delete(self, namespace: Namespace, name: str, if_match: str | None = None) -> None:
        """Deletes an object, only at version ``if_match`` if given.

        With ``if_match`` a missing object is NotFound and another version Conflict; without it
        deleting a missing object succeeds (deletes are idempotent).
        """
        key = self._key(namespace, name)
        await self.s3.delete(key, what=_what(namespace, name), if_match=if_match)
        logger.debug("object %s deleted", _what(namespace, name))

    async def _list_names(
        self, namespace: Namespace, page_size: int, after: str | None
    ) -> tuple[list[str], bool]:
        """Up to ``page_size`` names after ``after``, and whether more keys follow."""
        prefix = self.namespace_prefix(namespace)
        client = self.s3.client
        # The delimiter keeps anything nested under a name out.
        kwargs: dict[str, Any] = {"Bucket": self.s3.bucket, "Prefix": prefix, "Delimiter": "/"}
        if after is not None:
            kwargs["StartAfter"] = self.object_key(namespace, after)
        names: list[str] = []
        while True:
            # Foreign keys under the prefix take room in an answer: ask again for what is missing.
            kwargs["MaxKeys"] = page_size - len(names)
            answer = await self.s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
            for item in answer.get("Contents", []):
                key = item["Key"]
                name = key[len(prefix) :].removesuffix(".json")
                if key.endswith(".json") and OBJECT_NAME_RE.match(name):
                    names.append(name)
            more = bool(answer.get("IsTruncated"))
            if len(names) >= page_size or not more:
                return names, more
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]

    def _key(self, namespace: Namespace, name: str) -> str:
        return self.object_key(namespace, check_object_name(name))

    # Defined last: inside the class body, later annotations would take "list" for it.
    async def list(self, namespace: Namespace, page_size: int, page_token: str = "") -> ObjectPage:
        """A page of a namespace's objects with their bodies, in key order, and the token of
        the next page ("" when done).

        Meant for small namespaces (leases: one per orchestrator replica): it costs 1 LIST per
        1000 objects + 1 GET per object listed, the GETs run concurrently (at most
        ``list_get_concurrency`` at once). Key order is the order of ``<name>.json``: it differs
        from plain name order only where one name extends another with ``-`` or ``.``. Objects
        deleted between the LIST and their GET are skipped, so a page may hold fewer objects
        than asked.
        """
        check_page_size(page_size, MAX_OBJECTS_PAGE)
        ns = _namespace(namespace)
        after = decode_objects_token(ns.value, page_token) if page_token else None
        names, more = await self._list_names(ns, page_size, after)
        found = await self.s3.read_many([self.object_key(ns, name) for name in names])
        objects = [
            StoredObject(name, got.body, got.version)
            for name, got in zip(names, found, strict=True)
            if got is not None
        ]
        return objects, encode_objects_token(ns.value, names[-1]) if more and names else ""


def _namespace(namespace: Namespace | str) -> Namespace:
    try:
        return Namespace(namespace)
    except ValueError:
        known = ", ".join(n.value for n in Namespace)
        raise InvalidInput(f"namespace {namespace!r} is not one of: {known}") from None


def _what(namespace: Namespace, name: str) -> str:
    return f"object {namespace}/{name}"
