"""Regenerates the Python gRPC stubs for every .proto under protos/.

Output lands at the repository root (``wealthai/...``) so that the import path mirrors the
proto package path: ``protos/wealthai/storage/v1/storage.proto`` becomes
``wealthai.storage.v1.storage_pb2``. Run ``make protos`` (every make target that needs the
stubs does). The stubs are build output, not committed, so they cannot drift from the protos.
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


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
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
