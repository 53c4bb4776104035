"""Writes the Python protobuf and gRPC modules for proto/distill/v1 (``make proto``).

``python -m distillery_gen.grpc [OUT_DIR]`` runs grpc_tools.protoc with ``-I proto``
(plus grpc_tools' bundled well-known types), so the modules are named after the proto paths:
``OUT_DIR/distill/v1/{events_pb2,ingest_pb2,ingest_pb2_grpc}.py``. OUT_DIR defaults to this
package, where they import as ``distillery.contracts.grpc_gen.distill.v1``. protoc writes absolute imports
between them (``from distill.v1 import ingest_pb2``); those lines alone are rewritten to
``from distillery.contracts.grpc_gen.distill.v1 import ...``. The descriptors keep their proto names
(``distill/v1/events.proto``), so the wire format is the one other languages generate.
tests/unit/test_grpc_generated.py regenerates into a temporary folder and checks that the
committed files are byte-identical, i.e. current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # generators run from a checkout: cli/distillery_gen -> repo
HERE = ROOT / "shared" / "distillery" / "contracts" / "grpc_gen"
PROTO_ROOT = ROOT / "proto"
PROTOS = ("distill/v1/events.proto", "distill/v1/ingest.proto")
OUTPUTS = ("distill/v1/events_pb2.py", "distill/v1/ingest_pb2.py", "distill/v1/ingest_pb2_grpc.py")
PACKAGE = "distillery.contracts.grpc_gen"
_IMPORT = re.compile(r"^from distill\.v1 import ", re.MULTILINE)


def generate(out_dir: Path = HERE, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc into ``out_dir`` and fix the imports; returns the written modules."""
    import importlib.resources

    from grpc_tools import protoc  # a dev dependency (grpcio-tools); only generation needs it

    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
            *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = []
    for name in OUTPUTS:
        path = out_dir / name
        path.write_text(_IMPORT.sub(f"from {PACKAGE}.distill.v1 import ", path.read_text()))
        written.append(path)
    # events.proto has no service: protoc still writes an empty events_pb2_grpc.py; it is not kept.
    (out_dir / "distill" / "v1" / "events_pb2_grpc.py").unlink(missing_ok=True)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for module in generate(target):
        print(f"wrote {module}")
