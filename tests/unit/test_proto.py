"""The protobuf contracts (proto/distill/v1) agree with the pydantic event models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distillery.contracts import events

PROTO = Path(__file__).resolve().parents[2] / "proto" / "distill" / "v1" / "events.proto"
MESSAGE = re.compile(r"message (\w+) \{(.*?)\n\}", re.DOTALL)
FIELD = re.compile(r"^\s+(?:repeated )?[\w.<>, ]+? (\w+) = \d+;", re.MULTILINE)


def proto_messages() -> dict[str, list[str]]:
    return {name: FIELD.findall(body) for name, body in MESSAGE.findall(PROTO.read_text())}


def test_every_event_has_a_proto_message_with_the_same_fields():
    messages = proto_messages()
    event_classes = [c for c in vars(events).values()
                     if isinstance(c, type) and issubclass(c, events.Event) and c is not events.Event]
    assert len(event_classes) >= 9
    for cls in event_classes:
        assert cls.__name__ in messages, f"{cls.__name__} missing from events.proto"
        assert messages[cls.__name__] == list(cls.model_fields), cls.__name__


def test_payload_parts_agree_too():
    messages = proto_messages()
    for name, fields in messages.items():
        cls = getattr(events, name)
        assert fields == list(cls.model_fields), name


def test_proto_compiles(tmp_path):
    grpc_tools = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is a dev dependency")
    import importlib.resources

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    code = grpc_tools.main(["protoc", f"-I{PROTO.parents[2]}", f"-I{include}", f"--python_out={tmp_path}",
                            str(PROTO.relative_to(PROTO.parents[2]))])
    assert code == 0
    assert (tmp_path / "distill" / "v1" / "events_pb2.py").is_file()
