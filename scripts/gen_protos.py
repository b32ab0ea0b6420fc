"""Regenerates the Python gRPC stubs for every .proto under protos/.

Output lands at the repository root (``wealthai/...``) so that the import path mirrors the
proto package path: ``protos/wealthai/storage/v1/storage.proto`` becomes
``wealthai.storage.v1.storage_pb2``. Run ``make protos``; ``--check`` exits 1 when the stubs on
disk differ from what the protos generate.
"""

from __future__ import annotations

import argparse
import filecmp
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if stubs on disk are stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        generate(tmp_path)
        fresh, current = tmp_path / OUT_PACKAGE, ROOT / OUT_PACKAGE
        if opts.check:
            cmp = filecmp.dircmp(fresh, current) if current.exists() else None
            if cmp is None or _differs(cmp):
                sys.exit("generated stubs are stale: run `make protos`")
            return
        shutil.rmtree(current, ignore_errors=True)
        shutil.copytree(fresh, current)


def _differs(cmp: filecmp.dircmp[str]) -> bool:
    if cmp.left_only or cmp.right_only or cmp.diff_files:
        return True
    return any(_differs(sub) for sub in cmp.subdirs.values())


if __name__ == "__main__":
    main()
