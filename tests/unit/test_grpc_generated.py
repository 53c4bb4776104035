"""The committed gRPC/protobuf modules (shared/distillery/contracts/grpc_gen) are current: regenerating
them from proto/distill/v1 (what ``make proto`` runs) gives the same bytes."""

from __future__ import annotations

import pytest

from distillery_gen import grpc as generate


def test_committed_modules_are_byte_identical_to_a_fresh_generation(tmp_path):
    pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is a dev dependency")
    fresh = generate.generate(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in fresh] == list(generate.OUTPUTS)
    stale = [name for name in generate.OUTPUTS
             if (generate.HERE / name).read_bytes() != (tmp_path / name).read_bytes()]
    assert not stale, f"{stale} differ from proto/distill/v1: run `make proto` and commit the result"
    assert sorted(p.name for p in (tmp_path / "distill" / "v1").iterdir()) == sorted(
        name.rsplit("/", 1)[1] for name in generate.OUTPUTS)


def test_generated_modules_import_as_a_package():
    from distillery.contracts.grpc_gen.distill.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

    assert ingest_pb2.DESCRIPTOR.package == events_pb2.DESCRIPTOR.package == "distill.v1"
    assert set(ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].methods_by_name) == {"SubmitTasks", "GetTaskStatus"}
    assert hasattr(ingest_pb2_grpc, "IngestStub")
    submit = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].methods_by_name["SubmitTasks"]
    assert submit.client_streaming and not submit.server_streaming
