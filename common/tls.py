"""Mutual TLS between the services: who may call whom, the local CA, and gRPC credentials.

Every service has a role (:class:`Role`), written as the common name of its certificate. A
gRPC server accepts only clients presenting a certificate issued by the platform's CA
(``ca.pem``), and :class:`CallerCheck` then lets a call through only if the client's role is
among the server's :data:`ALLOWED_CALLERS`, and only to the methods its role is limited to
(:data:`CALLER_SCOPES`: a worker and the gateway reach storage_svc's files, not its task
documents). The one
exception is the gRPC health service, which any certificate of the CA may call, so one probe
identity serves every service.

A client checks the server too: it verifies the server's certificate against the CA *and* that
it names the role it expects (the channel's TLS host name is the role, not the address), so an
orchestrator reaching a storage address held by a worker refuses to talk to it. This also
keeps certificates independent of addresses: replicas found by DNS, pod IPs and compose names
all verify against the same ``DNS:<role>`` entry.

The certificates come from :func:`ensure_certificates`: a local CA (EC P-256, ~10 years) and
one leaf per role (EC P-256, ~1 year, serverAuth + clientAuth), made with the ``cryptography``
package the platform already depends on, so no ``openssl`` binary or extra tool is needed.
``python -m common.tls --out DIR`` makes them for a deployment; ``make run`` makes them under
``.run/tls/`` on first start.

Directory layout: ``ca.pem`` (the CA certificate), ``ca-key.pem`` (the CA key: only to issue
more leaves; never give it to a service), ``<role>.pem`` and ``<role>-key.pem`` per role. Keys
are written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.rpc_handlers import rewrap
from common.settings import ServiceSettings, env_names

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Role(enum.StrEnum):
    """What a service is, as its certificate names it (the subject's common name)."""

    GATEWAY = "gateway"
    ORCHESTRATOR = "orchestrator"
    STORAGE = "storage"
    WORKER = "worker"


ALLOWED_CALLERS: Mapping[Role, frozenset[Role]] = {
    Role.ORCHESTRATOR: frozenset({Role.GATEWAY, Role.ORCHESTRATOR}),
    # Workers stream a job's files and store its result files; the gateway serves the file
    # API (both limited by CALLER_SCOPES).
    Role.STORAGE: frozenset({Role.ORCHESTRATOR, Role.WORKER, Role.GATEWAY}),
    Role.WORKER: frozenset({Role.ORCHESTRATOR}),
    Role.GATEWAY: frozenset(),  # serves REST only; nothing calls it over gRPC
}
"""The roles whose calls each gRPC service accepts."""

CALLER_SCOPES: Mapping[Role, tuple[str, ...]] = {
    Role.WORKER: ("/wealthai.storage.v1.FileService/",),
    Role.GATEWAY: (
        "/wealthai.orchestrator.v1.OrchestratorService/",
        "/wealthai.storage.v1.FileService/",
        "/grpc.reflection.",
    ),
}
"""Method prefixes a role is limited to wherever it is accepted; a role not named here may call
every method of the services that accept it. A worker acts on files for a job's owner and the
gateway serves the file API: neither ever needs a task document, a lease, an API key hash or a
sealed password from storage_svc."""

OPEN_TO_EVERY_ROLE = ("/grpc.health.v1.Health/",)
"""Method prefixes any certificate of the CA may call: probes need no particular role."""

HOST_NAMES: Mapping[Role, tuple[str, ...]] = {
    Role.GATEWAY: ("gateway",),
    Role.ORCHESTRATOR: ("orchestrator",),
    Role.STORAGE: ("storage", "storage_svc"),
    Role.WORKER: ("worker", "section_worker"),
}
"""DNS names in each role's certificate besides ``localhost``: the role, then its compose
service name (for tools such as grpcurl that verify the address they dial)."""

ORGANIZATION = "wealthai"
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"


def cert_file(role: Role) -> str:
    return f"{role.value}.pem"


def key_file(role: Role) -> str:
    return f"{role.value}-key.pem"


class TlsError(Exception):
    """Certificate files that are missing, unreadable or do not belong together."""


# -- generating the local CA and the leaves ---------------------------------------------------


def ensure_certificates(directory: Path, roles: Iterable[Role] = tuple(Role)) -> list[Path]:
    """Makes the CA and a certificate per role in ``directory`` where missing or no longer
    valid (expired within 30 days, not issued by this CA, key not matching); keeps the rest.
    Returns the files written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    written: list[Path] = []
    ca = _read_ca(directory, now)
    if ca is None:
        ca = _make_ca(now)
        written += _write_pair(directory, CA_CERT, CA_KEY, *ca)
    ca_cert, ca_key = ca
    for role in roles:
        if not _leaf_is_valid(directory, role, ca_cert, now):
            cert, key = _make_leaf(role, ca_cert, ca_key, now)
            written += _write_pair(directory, cert_file(role), key_file(role), cert, key)
    return written


def _read_ca(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
        return None
    return (cert, key) if cert.not_valid_after_utc - RENEW_BEFORE > now else None


def _leaf_is_valid(directory: Path, role: Role, ca: x509.Certificate, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((directory / cert_file(role)).read_bytes())
        key = serialization.load_pem_private_key((directory / key_file(role)).read_bytes(), None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return (
        role_of(cert) == role
        and _same_key(cert, key)
        and cert.not_valid_after_utc - RENEW_BEFORE > now
    )


def _same_key(cert: x509.Certificate, key: Any) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def role_of(cert: x509.Certificate) -> Role | None:
    """The role a certificate's common name names, if any."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return Role(value) if value in {r.value for r in Role} else None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _make_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{ORGANIZATION} local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    role: Role, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.DNSName(host) for host in HOST_NAMES[role]]
    names.append(x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(role.value))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_pair(
    directory: Path,
    cert_name: str,
    key_name: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> list[Path]:
    key_path = directory / key_name
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path = directory / cert_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return [cert_path, key_path]


# -- loading them into gRPC ------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One service's TLS material: the CA it trusts and its own certificate and key."""

    role: Role
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, directory: Path, role: Role) -> Identity:
        """Reads ``ca.pem``, ``<role>.pem`` and ``<role>-key.pem`` from ``directory``;
        :class:`TlsError` naming the file that is missing or unusable."""
        parts: dict[str, bytes] = {}
        for part, name in (("ca", CA_CERT), ("cert", cert_file(role)), ("key", key_file(role))):
            path = directory / name
            try:
                parts[part] = path.read_bytes()
            except OSError as exc:
                raise TlsError(f"cannot read {path}: {exc.strerror}") from None
        try:
            cert = x509.load_pem_x509_certificate(parts["cert"])
            key = serialization.load_pem_private_key(parts["key"], None)
            x509.load_pem_x509_certificate(parts["ca"])
        except ValueError as exc:
            raise TlsError(f"unusable certificate files in {directory}: {exc}") from None
        if role_of(cert) != role:
            raise TlsError(f"{directory / cert_file(role)} is not a {role.value} certificate")
        if not _same_key(cert, key):
            raise TlsError(f"{directory / key_file(role)} does not match its certificate")
        return cls(role, parts["ca"], parts["cert"], parts["key"])

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serves with this identity; clients must present a certificate of the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Calls with this identity, trusting only servers with a certificate of the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def identity_for(settings: ServiceSettings, role: Role) -> Identity | None:
    """This service's identity as ``settings`` configure it; ``None`` in plaintext mode (said
    in a WARNING). Missing or unusable files stop start-up naming the setting."""
    if settings.tls_mode == "plaintext":
        logger.warning(
            "internal gRPC runs in PLAINTEXT (%s=plaintext): calls are neither encrypted nor "
            "authenticated; use it only on a network nothing else can reach",
            env_names(type(settings), "tls_mode")[0],
        )
        return None
    try:
        return Identity.load(settings.tls_dir, role)
    except TlsError as exc:
        setting = env_names(type(settings), "tls_dir")[0]
        raise SystemExit(
            f"{role.value}: {exc} ({setting} names the folder; make one with "
            f"`python -m common.tls --out DIR`, or set "
            f"{env_names(type(settings), 'tls_mode')[0]}=plaintext to run without TLS)"
        ) from None


def expect_server(role: Role) -> list[tuple[str, str]]:
    """Channel options making the server's certificate prove ``role`` (see the module doc)."""
    return [("grpc.ssl_target_name_override", role.value)]


# -- checking the caller on the server -------------------------------------------------------


def caller_role(context: grpc.aio.ServicerContext[Any, Any]) -> Role | None:
    """The role in the verified client certificate of a call, if it names exactly one."""
    names = context.auth_context().get("x509_common_name") or []
    values = {name.decode(errors="replace") for name in names}
    roles = [Role(value) for value in values if value in {r.value for r in Role}]
    return roles[0] if len(roles) == 1 else None


def may_call(role: Role | None, method: str, allowed: frozenset[Role]) -> bool:
    """Whether a caller of ``role`` may call ``method`` of a server accepting ``allowed``."""
    if role is None or role not in allowed:
        return False
    scope = CALLER_SCOPES.get(role)
    return scope is None or method.startswith(scope)


class CallerCheck(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) a call whose client certificate names a role not in
    ``allowed``, or a method outside that role's :data:`CALLER_SCOPES`; health checks are open
    to every role. Runs only with mutual TLS, where the handshake has already refused clients
    without a certificate of the CA."""

    def __init__(self, allowed: frozenset[Role]) -> None:
        self.allowed = allowed

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_TO_EVERY_ROLE):
            return handler
        return _guarded(handler, method, self.allowed)


def _guarded(
    handler: grpc.RpcMethodHandler[Req, Resp], method: str, allowed: frozenset[Role]
) -> grpc.RpcMethodHandler[Req, Resp]:
    """``handler`` with the caller check first, whatever kind of call it serves."""

    async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        role = caller_role(context)
        if not may_call(role, method, allowed):
            logger.warning("refused %s to a %s certificate", method, role or "role-less")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} is not open to {role or 'this certificate'}",
            )

    def answer(inner: Any) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check(context)
            return await inner(request, context)

        return call

    def stream(inner: Any) -> Any:
        async def call(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await check(context)
            async for item in inner(request, context):
                yield item

        return call

    return rewrap(handler, method, answer=answer, stream=stream)


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m common.tls",
        description="Make the platform's local CA and one certificate per service role "
        "(ca.pem, ca-key.pem, <role>.pem, <role>-key.pem) in a directory. Files still valid "
        "are kept, so running it again only replaces what is missing or about to expire.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument(
        "--role",
        action="append",
        choices=[r.value for r in Role],
        help="make only this role's certificate (repeatable; default: every role)",
    )
    args = parser.parse_args(argv)
    roles = [Role(r) for r in args.role] if args.role else list(Role)
    written = ensure_certificates(args.out, roles)
    for path in written:
        print(f"wrote {path}")
    print(f"{args.out}: CA {args.out / CA_CERT}, {len(written)} file(s) written")


if __name__ == "__main__":
    main()
