"""storage_svc: the only process that talks to S3.

It keeps one JSON document per task at ``<prefix><task_id>.json`` (and, for a task created with an
owner, an empty marker in that owner's index at ``<prefix>_owners/…``) and small JSON objects in
namespaces at ``<prefix>_<namespace>/<name>.json`` (orchestrator leases, idempotency keys),
guards every write with the object's ETag (compare-and-swap), and serves all of it over the
``wealthai.storage.v1.StorageService`` gRPC contract. It also keeps the platform's files under
``files/`` and serves them over ``wealthai.storage.v1.FileService``.

- :mod:`storage_svc.settings` — what can be configured (``STORAGE_*`` environment variables).
- :mod:`storage_svc.documents` — documents, names, bodies, preconditions, page tokens: checks, no
  I/O (task ids are :mod:`common.task_ids`).
- :mod:`storage_svc.s3calls` — the S3 client, bounded retries, S3 errors → platform errors, and
  the one way JSON objects are read, written (compare-and-swap) and deleted.
- :mod:`storage_svc.bucket` — start-up: create the bucket, keep the lifecycle rule.
- :mod:`storage_svc.listing` — task ids newest first from key names, one UTC day at a time.
- :mod:`storage_svc.owners` — the owner index: one marker per task under its owner, listed
  newest first.
- :mod:`storage_svc.store` — :class:`~storage_svc.store.TaskStore`, the task documents.
- :mod:`storage_svc.objects` — :class:`~storage_svc.objects.ObjectStore`, namespaced objects.
- :mod:`storage_svc.servicer` — the thin gRPC adapter over the two stores.
- :mod:`storage_svc.filemeta` — a file's metadata record, key layout, ranges, checks: no I/O
  (file ids are :mod:`common.file_ids`).
- :mod:`storage_svc.uploads` — streaming bytes into one S3 object (multipart, aborted on failure).
- :mod:`storage_svc.files` — :class:`~storage_svc.files.FileStore`, the files.
- :mod:`storage_svc.file_servicer` — the thin gRPC adapter over the files.
- :mod:`storage_svc.sweeper` — the loop deleting expired files.
- :mod:`storage_svc.__main__` — ``python -m storage_svc``.
"""
