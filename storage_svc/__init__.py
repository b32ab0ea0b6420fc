"""storage_svc: the only process that talks to S3.

It keeps one JSON document per task at ``<prefix><task_id>.json``, guards every write with the
object's ETag (compare-and-swap), keeps a small index of unfinished tasks, and serves all of it
over the ``wealthai.storage.v1.StorageService`` gRPC contract.

- :mod:`storage_svc.settings` — what can be configured (``STORAGE_*`` environment variables).
- :mod:`storage_svc.documents` — task ids, task documents and page tokens: checks, no I/O.
- :mod:`storage_svc.s3calls` — the S3 client, bounded retries, S3 errors → platform errors.
- :mod:`storage_svc.bucket` — start-up: create the bucket, keep the lifecycle rule.
- :mod:`storage_svc.listing` — task ids newest first from key names, one UTC day at a time.
- :mod:`storage_svc.store` — :class:`~storage_svc.store.TaskStore`, the domain logic.
- :mod:`storage_svc.servicer` — the thin gRPC adapter over the store.
- :mod:`storage_svc.__main__` — ``python -m storage_svc``.
"""
