"""API keys through the orchestrator's gRPC adapter, over a real storage_svc and moto: a key is
shown once and stored only as its hash, listings carry neither, only admins manage keys, and a
malformed, unknown, wrong or revoked key resolves to nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from common import api_keys
from common.errors import Conflict
from common.grpc_server import ServiceHost
from common.principals import Principal, Role
from common.settings import GrpcServerSettings
from common.tls import Role as TlsRole
from orchestrator.keys import ApiKeys
from orchestrator.servicer import SERVICE_NAME, OrchestratorServicer
from orchestrator.storage_client import StorageClient
from storage_svc.objects import Namespace, ObjectStore
from storage_svc.store import TaskStore
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ADMIN = pb.Caller(principal_id="admin", tenant="wealth", admin=True)
CLIENT = pb.Caller(principal_id="acme/ann", tenant="acme")


@pytest.fixture
async def stub(storage: StorageClient) -> AsyncIterator[Any]:
    """The orchestrator's servicer on loopback; the key RPCs need only its storage client."""
    orchestrator = SimpleNamespace(peers=None, keys=ApiKeys(storage))
    plaintext = GrpcServerSettings(tls_mode="plaintext")
    host = ServiceHost(plaintext, "orchestrator", TlsRole.ORCHESTRATOR)
    host.add(
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        OrchestratorServicer(orchestrator),  # type: ignore[arg-type]
        SERVICE_NAME,
    )
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    await host.stop()


async def create(stub: Any, name: str = "ann", tenant: str = "acme", role: str = "client") -> Any:
    return await stub.CreateKey(
        pb.CreateKeyRequest(caller=ADMIN, name=name, tenant=tenant, role=role)
    )


async def refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


async def test_a_created_key_is_shown_once_and_stored_only_as_its_hash(
    stub: Any, store: TaskStore
) -> None:
    created = await create(stub)
    key_id = created.api_key.key_id
    assert api_keys.key_id_of(created.key) == key_id
    assert (created.api_key.name, created.api_key.tenant) == ("ann", "acme")
    assert created.api_key.principal_id == "acme/ann"
    assert created.api_key.role == "client"
    assert created.api_key.revoked_at == ""

    body, _ = await ObjectStore(store.s3).get(Namespace.API_KEYS, key_id)
    stored = json.loads(body)
    assert created.key not in body.decode()
    assert created.key.rsplit("_", 1)[-1] not in body.decode()  # nor its secret part
    assert stored["hash"] == api_keys.key_hash(created.key)
    assert stored["key_id"] == key_id

    listed = await stub.ListKeys(pb.ListKeysRequest(caller=ADMIN))
    assert [k.key_id for k in listed.keys] == [key_id]
    wire = listed.SerializeToString()
    assert created.key.encode() not in wire
    assert stored["hash"].encode() not in wire


async def test_keys_are_random_and_of_the_documented_form() -> None:
    drawn = {api_keys.new_key()[1] for _ in range(50)}
    assert len(drawn) == 50
    for key in drawn:
        assert api_keys.REGEX.match(key), key
        secret = key.split("_", 2)[2]
        assert len(secret) == 43  # 32 bytes of urlsafe base64: 256 bits


async def test_a_key_resolves_to_its_principal(stub: Any) -> None:
    client = await create(stub, "ann", "acme", "client")
    admin = await create(stub, "ops", "wealth", "admin")

    resolved = await stub.ResolveKey(pb.ResolveKeyRequest(key=client.key))
    assert (resolved.key_id, resolved.principal_id, resolved.tenant, resolved.admin) == (
        client.api_key.key_id,
        "acme/ann",
        "acme",
        False,
    )
    resolved = await stub.ResolveKey(pb.ResolveKeyRequest(key=admin.key))
    assert (resolved.principal_id, resolved.admin) == ("wealth/ops", True)


async def test_a_revoked_key_is_refused_and_revoking_again_changes_nothing(stub: Any) -> None:
    created = await create(stub)
    key_id = created.api_key.key_id
    revoked = await stub.RevokeKey(pb.RevokeKeyRequest(caller=ADMIN, key_id=key_id))
    assert revoked.revoked_at
    code = await refused(stub.ResolveKey(pb.ResolveKeyRequest(key=created.key)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    again = await stub.RevokeKey(pb.RevokeKeyRequest(caller=ADMIN, key_id=key_id))
    assert again.revoked_at == revoked.revoked_at
    [listed] = (await stub.ListKeys(pb.ListKeysRequest(caller=ADMIN))).keys
    assert listed.revoked_at == revoked.revoked_at


async def test_unknown_wrong_and_malformed_keys_are_refused_alike(stub: Any) -> None:
    created = await create(stub)
    key_id = created.api_key.key_id
    _, other = api_keys.new_key()
    wrong_secret = f"wak_{key_id}_{other.split('_', 2)[2]}"
    for key in (other, wrong_secret, "", "wak_admin_x", created.key + "x", created.key[:-1]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ResolveKey(pb.ResolveKeyRequest(key=key))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, key
        assert err.value.details() == "unknown or revoked API key"


async def test_only_an_admin_manages_keys(stub: Any) -> None:
    created = await create(stub)
    key_id = created.api_key.key_id
    calls = [
        stub.CreateKey(pb.CreateKeyRequest(caller=CLIENT, name="x", tenant="acme", role="admin")),
        stub.ListKeys(pb.ListKeysRequest(caller=CLIENT)),
        stub.RevokeKey(pb.RevokeKeyRequest(caller=CLIENT, key_id=key_id)),
        stub.ListKeys(pb.ListKeysRequest()),  # no caller at all
    ]
    for call in calls:
        assert await refused(call) == grpc.StatusCode.PERMISSION_DENIED
    assert (await stub.ResolveKey(pb.ResolveKeyRequest(key=created.key))).key_id == key_id


async def test_revoking_an_unknown_key_is_not_found(stub: Any) -> None:
    for key_id in ("0123456789ab", "../../tasks", ""):
        code = await refused(stub.RevokeKey(pb.RevokeKeyRequest(caller=ADMIN, key_id=key_id)))
        assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "tenant", "role", "field"),
    [
        ("", "acme", "client", "name"),
        ("a" * 65, "acme", "client", "name"),
        ("a b", "acme", "client", "name"),
        ("ann", "", "client", "tenant"),
        ("ann", "ac/me", "client", "tenant"),
        ("ann", "acme", "root", "role"),
    ],
)
async def test_bad_fields_are_invalid_input_naming_the_field(
    stub: Any, name: str, tenant: str, role: str, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(stub, name, tenant, role)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


async def test_the_hash_comparison_takes_the_whole_key() -> None:
    _, key = api_keys.new_key()
    stored = api_keys.key_hash(key)
    assert api_keys.matches(key, stored)
    assert not api_keys.matches(key[:-1] + ("A" if key[-1] != "A" else "B"), stored)
    assert not api_keys.matches(key, stored[:-1])


class CollidingStorage:
    """Storage where the first key id drawn is taken: creation must draw another, never
    replace the stored key."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, str | None]] = []

    async def put_object(
        self, namespace: int, name: str, body: bytes, *, version: str | None
    ) -> str:
        self.puts.append((name, version))
        if len(self.puts) == 1:
            raise Conflict(f"object {name} already exists")
        return "v1"

    async def get_object(self, namespace: int, name: str) -> tuple[bytes, str]:
        raise AssertionError("not read")

    async def list_objects(self, namespace: int) -> list[tuple[str, bytes, str]]:
        return []


async def test_a_key_id_drawn_twice_never_replaces_a_key() -> None:
    storage = CollidingStorage()
    record, key = await ApiKeys(storage).create(
        Principal("admin", "wealth", Role.ADMIN), "ann", "acme", "client"
    )
    assert [version for _, version in storage.puts] == [None, None]  # create-only, twice
    assert storage.puts[1][0] == record.key_id == api_keys.key_id_of(key)
    assert storage.puts[0][0] != record.key_id
