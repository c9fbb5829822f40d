"""Generate the protobuf / gRPC stubs in ``recsys_stream/contracts/pb`` from ``proto/``.

``python -m recsys_stream.contracts.codegen`` rewrites the stubs; ``--check`` exits 1 when the
committed stubs differ from what the current ``.proto`` files generate (a test runs it).

protoc writes imports as ``from recsys.v1 import x_pb2`` (the proto package path); the one
mechanical rewrite below points them at this package so the stubs import without touching
``sys.path``. The stubs are never edited by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "pb"
_IMPORT = re.compile(r"^from recsys\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every ``proto/recsys/v1/*.proto`` and write the stubs to ``out_dir``."""
    from grpc_tools import protoc  # dev dependency: only needed to (re)generate

    protos = sorted((PROTO_DIR / "recsys" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((Path(tmp) / "recsys" / "v1").iterdir()):
            text = _IMPORT.sub("from recsys_stream.contracts.pb import ", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
        (out_dir / "__init__.py").write_text('"""Generated protobuf and gRPC stubs (see codegen.py)."""\n')
        return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = ap.parse_args(argv)
    if not args.check:
        for p in generate(OUT_DIR):
            print(p.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {p.name: p.read_text() for p in OUT_DIR.glob("*.py*") if p.name != "__init__.py"}
    fresh.pop("__init__.py", None)
    stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    if stale:
        print("stale protobuf stubs (run `make protos`):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
