"""Regenerates the Python gRPC stubs for every .proto under protos/.

Output lands at the repository root (``wealthai/...``) so that the import path mirrors the
proto package path: ``protos/wealthai/storage/v1/storage.proto`` becomes
``wealthai.storage.v1.storage_pb2``. Run ``make protos`` (every make target that needs the
stubs does). The stubs are build output, not committed, so they cannot drift from the protos.

Where mypy-protobuf is installed (requirements-dev.lock), its plugins write the ``.pyi`` files,
so mypy sees typed messages and typed servicer and stub classes for ``grpc.aio``. Without it (the
runtime image, built from requirements.lock) protoc's own ``--pyi_out`` types the messages and
the gRPC modules get no ``.pyi``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = "wealthai"


def _stub_args(out_dir: Path) -> list[str]:
    """protoc's flags for the ``.pyi`` files: mypy-protobuf's plugins where installed."""
    # Console scripts land next to the interpreter of the venv they were installed into.
    bin_dir = str(Path(sys.executable).parent)
    mypy_plugin = shutil.which("protoc-gen-mypy", path=bin_dir)
    grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=bin_dir)
    if mypy_plugin and grpc_plugin:
        return [
            f"--plugin=protoc-gen-mypy={mypy_plugin}",
            f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
            f"--mypy_out=quiet:{out_dir}",
            f"--mypy_grpc_out=quiet:{out_dir}",
        ]
    return [f"--pyi_out={out_dir}"]


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *_stub_args(out_dir),
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for folder in (out_dir / OUT_PACKAGE).rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()
    (out_dir / OUT_PACKAGE / "__init__.py").touch()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        generate(tmp_path)
        current = ROOT / OUT_PACKAGE
        shutil.rmtree(current, ignore_errors=True)
        shutil.copytree(tmp_path / OUT_PACKAGE, current)


if __name__ == "__main__":
    main()
