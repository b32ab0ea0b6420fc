"""Mutual TLS between the services: the local CA and its certificates, and a real gRPC server
that accepts only its allowed callers."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.channels import open_channel
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import (
    ALLOWED_CALLERS,
    CA_CERT,
    CALLER_SCOPES,
    Identity,
    Role,
    TlsError,
    cert_file,
    ensure_certificates,
    key_file,
    main,
    may_call,
    role_of,
)
from wealthai.storage.v1 import files_pb2, files_pb2_grpc, storage_pb2, storage_pb2_grpc
from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

LOAD = worker_pb2.GetLoadRequest()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ensure_certificates(directory)
    return directory


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("other-ca")
    ensure_certificates(directory)
    return directory


# -- the certificates -----------------------------------------------------------------------


def test_generation_makes_a_ca_and_a_pair_per_role_with_private_keys(tmp_path: Path) -> None:
    written = ensure_certificates(tmp_path)

    expected = {CA_CERT, "ca-key.pem"} | {cert_file(r) for r in Role} | {key_file(r) for r in Role}
    assert {p.name for p in written} == expected
    for path in tmp_path.glob("*-key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca = x509.load_pem_x509_certificate((tmp_path / CA_CERT).read_bytes())
    for role in Role:
        cert = x509.load_pem_x509_certificate((tmp_path / cert_file(role)).read_bytes())
        cert.verify_directly_issued_by(ca)
        assert role_of(cert) == role
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {"localhost", role.value} <= set(names.get_values_for_type(x509.DNSName))
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {u.dotted_string for u in usage} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}


def test_generation_is_idempotent_and_replaces_only_what_is_missing_or_foreign(
    tmp_path: Path, other_ca: Path
) -> None:
    ensure_certificates(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    assert ensure_certificates(tmp_path) == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    (tmp_path / key_file(Role.WORKER)).unlink()
    for name in (cert_file(Role.STORAGE), key_file(Role.STORAGE)):
        (tmp_path / name).write_bytes((other_ca / name).read_bytes())  # another CA's pair
    rewritten = ensure_certificates(tmp_path)

    replaced = [cert_file(Role.WORKER), key_file(Role.WORKER)]
    replaced += [cert_file(Role.STORAGE), key_file(Role.STORAGE)]
    assert sorted(p.name for p in rewritten) == sorted(replaced)
    assert (tmp_path / CA_CERT).read_bytes() == before[CA_CERT]
    assert (tmp_path / cert_file(Role.GATEWAY)).read_bytes() == before[cert_file(Role.GATEWAY)]


def test_the_command_line_writes_the_folder(tmp_path: Path, capsys: Any) -> None:
    main(["--out", str(tmp_path / "tls"), "--role", "storage"])

    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == sorted(
        [CA_CERT, "ca-key.pem", "storage.pem", "storage-key.pem"]
    )
    assert "4 file(s) written" in capsys.readouterr().out


def test_loading_names_the_file_that_is_missing_or_of_another_role(
    tmp_path: Path, tls_dir: Path
) -> None:
    with pytest.raises(TlsError, match=r"cannot read .*ca\.pem"):
        Identity.load(tmp_path, Role.STORAGE)
    for name in (CA_CERT, "worker.pem", "worker-key.pem"):
        (tmp_path / name).write_bytes((tls_dir / name).read_bytes())
    (tmp_path / "storage.pem").write_bytes((tls_dir / "worker.pem").read_bytes())
    (tmp_path / "storage-key.pem").write_bytes((tls_dir / "worker-key.pem").read_bytes())
    with pytest.raises(TlsError, match="not a storage certificate"):
        Identity.load(tmp_path, Role.STORAGE)
    (tmp_path / "worker-key.pem").write_bytes((tls_dir / "gateway-key.pem").read_bytes())
    with pytest.raises(TlsError, match="does not match"):
        Identity.load(tmp_path, Role.WORKER)


def test_every_service_is_open_only_to_its_real_callers() -> None:
    assert ALLOWED_CALLERS[Role.STORAGE] == {Role.ORCHESTRATOR, Role.WORKER, Role.GATEWAY}
    assert ALLOWED_CALLERS[Role.WORKER] == {Role.ORCHESTRATOR}
    assert ALLOWED_CALLERS[Role.ORCHESTRATOR] == {Role.GATEWAY, Role.ORCHESTRATOR}
    assert CALLER_SCOPES[Role.WORKER] == ("/wealthai.storage.v1.FileService/",)
    assert set(CALLER_SCOPES) == {Role.WORKER, Role.GATEWAY}


FILES = "/wealthai.storage.v1.FileService/GetMeta"
TASKS = "/wealthai.storage.v1.StorageService/GetTask"
STORAGE_CALLERS = ALLOWED_CALLERS[Role.STORAGE]


@pytest.mark.parametrize(
    ("role", "method", "allowed", "expected"),
    [
        (Role.GATEWAY, FILES, STORAGE_CALLERS, True),
        (Role.GATEWAY, TASKS, STORAGE_CALLERS, False),
        (
            Role.GATEWAY,
            "/wealthai.orchestrator.v1.OrchestratorService/GetStats",
            {Role.GATEWAY},
            True,
        ),
        (Role.ORCHESTRATOR, TASKS, STORAGE_CALLERS, True),
        (Role.ORCHESTRATOR, FILES, STORAGE_CALLERS, True),
        (Role.WORKER, FILES, STORAGE_CALLERS, True),
        (Role.WORKER, TASKS, STORAGE_CALLERS, False),
        (Role.WORKER, FILES, frozenset({Role.ORCHESTRATOR}), False),
        (None, FILES, STORAGE_CALLERS, False),
    ],
)
def test_a_caller_may_call_what_the_server_and_its_own_scope_allow(
    role: Role | None, method: str, allowed: set[Role], expected: bool
) -> None:
    assert may_call(role, method, frozenset(allowed)) is expected


# -- a real server with mutual TLS ----------------------------------------------------------


class Worker(worker_pb2_grpc.SectionWorkerServiceServicer):
    async def GetLoad(self, request: Any, context: Any) -> Any:
        return worker_pb2.Load(capacity=3)

    async def RunSection(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield worker_pb2.SectionEvent(progress=worker_pb2.Progress(stage=worker_pb2.STAGE_ACCEPTED))


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Factory: a worker service on a free loopback port with the given settings and role."""
    hosts: list[ServiceHost] = []

    async def start(settings: GrpcServerSettings, role: Role = Role.WORKER) -> int:
        host = ServiceHost(settings, "test-worker", role)
        host.add(worker_pb2_grpc.add_SectionWorkerServiceServicer_to_server, Worker(), "w")
        hosts.append(host)
        return await host.start()

    yield start
    for host in hosts:
        await host.server.stop(None)


def mutual(tls_dir: Path, **values: Any) -> GrpcServerSettings:
    return GrpcServerSettings(port=0, tls_dir=tls_dir, **values)


async def load_as(port: int, channel_tls: Identity | None, expect: Role = Role.WORKER) -> Any:
    async with open_channel(f"127.0.0.1:{port}", channel_tls, expect) as channel:
        return await worker_pb2_grpc.SectionWorkerServiceStub(channel).GetLoad(LOAD, timeout=5)


async def refused(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    code: grpc.StatusCode = info.value.code()
    return code


async def test_an_allowed_role_is_served(serve: Serve, tls_dir: Path) -> None:
    port = await serve(mutual(tls_dir))

    answer = await load_as(port, Identity.load(tls_dir, Role.ORCHESTRATOR))

    assert answer.capacity == 3


async def test_a_call_without_a_client_certificate_is_refused(serve: Serve, tls_dir: Path) -> None:
    port = await serve(mutual(tls_dir))
    anonymous = grpc.ssl_channel_credentials(root_certificates=(tls_dir / CA_CERT).read_bytes())
    options = [("grpc.ssl_target_name_override", "worker")]

    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", anonymous, options) as channel:
        stub = worker_pb2_grpc.SectionWorkerServiceStub(channel)
        assert await refused(stub.GetLoad(LOAD, timeout=5)) == grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(channel)
        assert await refused(health.Check(health_pb2.HealthCheckRequest(), timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_a_plaintext_call_to_a_mutual_tls_server_is_refused(
    serve: Serve, tls_dir: Path
) -> None:
    port = await serve(mutual(tls_dir))

    assert await refused(load_as(port, None)) == grpc.StatusCode.UNAVAILABLE


async def test_a_role_not_allowed_is_denied_on_every_kind_of_call(
    serve: Serve, tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve(mutual(tls_dir))
    gateway = Identity.load(tls_dir, Role.GATEWAY)

    assert await refused(load_as(port, gateway)) == grpc.StatusCode.PERMISSION_DENIED
    async with open_channel(f"127.0.0.1:{port}", gateway, Role.WORKER) as channel:
        stream = worker_pb2_grpc.SectionWorkerServiceStub(channel).RunSection(
            worker_pb2.SectionJob(job_id="j"), timeout=5
        )
        assert await refused(stream.read()) == grpc.StatusCode.PERMISSION_DENIED
    assert "refused /wealthai.worker.v1.SectionWorkerService/GetLoad to a gateway" in caplog.text
    key = (tls_dir / key_file(Role.GATEWAY)).read_text()
    assert key.splitlines()[1] not in caplog.text


async def test_health_is_open_to_every_role_of_the_ca(serve: Serve, tls_dir: Path) -> None:
    port = await serve(mutual(tls_dir))
    gateway = Identity.load(tls_dir, Role.GATEWAY)

    async with open_channel(f"127.0.0.1:{port}", gateway, Role.WORKER) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_certificate_of_another_ca_is_refused(
    serve: Serve, tls_dir: Path, other_ca: Path
) -> None:
    port = await serve(mutual(tls_dir))
    stranger = Identity.load(other_ca, Role.ORCHESTRATOR)
    # The stranger trusts our CA, so only the server's check of its certificate can refuse it.
    forged = Identity(
        Role.ORCHESTRATOR, (tls_dir / CA_CERT).read_bytes(), stranger.cert, stranger.key
    )

    assert await refused(load_as(port, forged)) == grpc.StatusCode.UNAVAILABLE


async def test_a_server_of_another_role_is_not_trusted_by_the_client(
    serve: Serve, tls_dir: Path
) -> None:
    port = await serve(mutual(tls_dir))  # a worker answering where storage was expected
    orchestrator = Identity.load(tls_dir, Role.ORCHESTRATOR)

    assert await refused(load_as(port, orchestrator, Role.STORAGE)) == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_serves_anyone_only_when_set_and_says_so(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SystemExit, match=r"cannot read .*ca\.pem.*TLS_DIR.*TLS_MODE=plaintext"):
        await serve(GrpcServerSettings(port=0, tls_dir=tmp_path))

    with caplog.at_level(logging.WARNING):
        port = await serve(GrpcServerSettings(port=0, tls_mode="plaintext"))

    assert (await load_as(port, None)).capacity == 3
    assert "PLAINTEXT" in caplog.text


async def reflection_status(port: int, channel_tls: Identity) -> grpc.StatusCode:
    async with open_channel(f"127.0.0.1:{port}", channel_tls, Role.WORKER) as channel:
        # No request is sent: a refusing server may close the stream before a write.
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        await call.done_writing()
        code: grpc.StatusCode = await call.code()
        return code


async def reflected_services(port: int, channel_tls: Identity) -> list[str]:
    async with open_channel(f"127.0.0.1:{port}", channel_tls, Role.WORKER) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        return [s.name for s in reply.list_services_response.service]


async def test_reflection_is_off_unless_enabled_and_then_only_for_allowed_roles(
    serve: Serve, tls_dir: Path
) -> None:
    orchestrator = Identity.load(tls_dir, Role.ORCHESTRATOR)
    off = await serve(mutual(tls_dir))
    on = await serve(mutual(tls_dir, grpc_reflection=True))

    assert await reflection_status(off, orchestrator) == grpc.StatusCode.UNIMPLEMENTED
    assert await reflection_status(on, orchestrator) == grpc.StatusCode.OK
    assert "w" in await reflected_services(on, orchestrator)
    gateway = Identity.load(tls_dir, Role.GATEWAY)
    assert await reflection_status(on, gateway) == grpc.StatusCode.PERMISSION_DENIED


# -- a role limited to some methods ---------------------------------------------------------


class Files(files_pb2_grpc.FileServiceServicer):
    async def GetMeta(self, request: Any, context: Any) -> Any:
        return files_pb2.FileMeta(file_id=request.file_id)


class Tasks(storage_pb2_grpc.StorageServiceServicer):
    async def GetTask(self, request: Any, context: Any) -> Any:
        return storage_pb2.GetTaskResponse(version="v1")


async def test_workers_and_the_gateway_reach_only_the_files_of_storage(tls_dir: Path) -> None:
    host = ServiceHost(mutual(tls_dir), "test-storage", Role.STORAGE)
    host.add(files_pb2_grpc.add_FileServiceServicer_to_server, Files(), "f")
    host.add(storage_pb2_grpc.add_StorageServiceServicer_to_server, Tasks(), "s")
    port = await host.start()
    meta = files_pb2.FileRequest(file_id="f_1", owner="alice")
    task = storage_pb2.GetTaskRequest(task_id="t")
    try:
        for role, task_code in (
            (Role.WORKER, grpc.StatusCode.PERMISSION_DENIED),
            (Role.GATEWAY, grpc.StatusCode.PERMISSION_DENIED),
            (Role.ORCHESTRATOR, grpc.StatusCode.OK),
        ):
            identity = Identity.load(tls_dir, role)
            async with open_channel(f"127.0.0.1:{port}", identity, Role.STORAGE) as channel:
                answer = await files_pb2_grpc.FileServiceStub(channel).GetMeta(meta, timeout=5)
                assert answer.file_id == "f_1"
                tasks = storage_pb2_grpc.StorageServiceStub(channel)
                if task_code == grpc.StatusCode.OK:
                    assert (await tasks.GetTask(task, timeout=5)).version == "v1"
                else:
                    assert await refused(tasks.GetTask(task, timeout=5)) == task_code
    finally:
        await host.server.stop(None)
