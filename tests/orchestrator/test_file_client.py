"""The orchestrator's file calls against a real storage_svc on loopback (over moto): metadata,
listing and deletion as a principal, and files in tasks checked and cleaned up through them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.errors import InvalidInput, NotFound
from orchestrator import task_files
from orchestrator.config import load_config
from orchestrator.models import TaskState
from orchestrator.storage_client import StorageClient
from storage_svc.files import FileStore, NewFile
from tests.orchestrator.factories import task_record

ALICE = "t/alice"
BOB = "t/bob"
CONFIG = Path(__file__).resolve().parents[2] / "config.json"


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_metadata_names_the_key_and_flags_and_only_for_the_owner(
    storage: StorageClient, file_store: FileStore
) -> None:
    stored = await file_store.upload(
        NewFile(ALICE, "in.csv", "text/csv", temporary=True), chunks_of(b"a,b\n")
    )

    ref = await storage.files.meta(stored.file_id, ALICE)

    assert (ref.file_id, ref.name, ref.content_type, ref.size) == (
        stored.file_id,
        "in.csv",
        "text/csv",
        4,
    )
    assert ref.key == file_store.layout.data_key(stored.file_id)
    assert (ref.sha256, ref.temporary) == (stored.sha256, True)
    with pytest.raises(NotFound):
        await storage.files.meta(stored.file_id, BOB)


async def test_listing_pages_and_deleting(storage: StorageClient, file_store: FileStore) -> None:
    made = [await file_store.upload(NewFile(ALICE, f"{n}.txt"), chunks_of(b"x")) for n in range(3)]
    await file_store.upload(NewFile(BOB, "b.txt"), chunks_of(b"x"))

    page, token = await storage.files.list_page(ALICE)
    assert sorted(f.file_id for f in page) == sorted(m.file_id for m in made)
    assert token == ""

    await storage.files.delete(made[0].file_id, ALICE)
    with pytest.raises(NotFound):
        await storage.files.delete(made[1].file_id, BOB)
    page, _ = await storage.files.list_page(ALICE)
    assert len(page) == 2


async def test_a_task_checks_its_references_and_its_end_deletes_temporary_inputs(
    storage: StorageClient, file_store: FileStore
) -> None:
    temporary = await file_store.upload(NewFile(ALICE, "t.txt", temporary=True), chunks_of(b"t"))
    kept = await file_store.upload(NewFile(ALICE, "k.txt"), chunks_of(b"k"))
    bobs = await file_store.upload(NewFile(BOB, "b.txt"), chunks_of(b"b"))
    records = [{"a": {"file_id": temporary.file_id}, "b": [{"file_id": kept.file_id}]}]

    refs = await task_files.resolve(storage.files, ALICE, records)
    with pytest.raises(InvalidInput) as caught:
        await task_files.resolve(storage.files, ALICE, [{"c": {"file_id": bobs.file_id}}])
    assert caught.value.message == f"data[0].c: file {bobs.file_id} not found"

    record = task_record(status=TaskState.COMPLETED, principal_id=ALICE, files=refs)
    await task_files.after_task(storage.files, record, load_config(CONFIG), delete_temporary=True)

    page, _ = await storage.files.list_page(ALICE)
    assert [f.file_id for f in page] == [kept.file_id]
