"""The AsyncAPI 3.0 document of the pipeline: every topic, who sends and receives on it, and the
JSON schema of its payload, generated from the channel table (contracts.channels) and the pydantic
event models.

``python -m distillery_gen.asyncapi [OUT]`` writes it (default ``docs/asyncapi.json``); a test fails
when the committed document differs from what this writes, so it cannot drift from the code.
The channels, senders, receivers and events are the channel table's, not a copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distillery import __version__ as VERSION
from distillery.contracts.channels import CHANNELS, SERVICE_GROUPS, Channel, Consumer


def receivers(channel: Channel) -> list[str]:
    """Who receives on a channel: its consumers (with their groups) and its whole-topic readers."""
    return [receiver(c) for c in channel.consumers] + list(channel.readers)


def receiver(c: Consumer) -> str:
    if c.broadcast:
        return f"{c.service} (every replica, no group: {c.purpose})"
    shared = f", with {c.together_with} in one consumer" if c.together_with else ""
    return f"{c.service} (group {SERVICE_GROUPS[c.service]}{c.suffix}{shared})"


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """One JSON schema per event, with the nested models lifted into components."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def document(prefix: str = "distill") -> dict[str, Any]:
    channels, operations, messages = {}, {}, {}
    every_model = [m for ch in CHANNELS for m in ch.events]
    for ch in CHANNELS:
        stem, senders, received_by = ch.stem, ch.producers, receivers(ch)
        key = stem.replace(".", "_").replace("{teacher_id}", "teacher")
        channel: dict[str, Any] = {
            "address": f"{prefix}.{stem}.v1",
            "description": f"Kafka topic, {ch.partitions} partition(s), keyed by the event's entity id or task. "
                           f"Sent by: {', '.join(senders)}. Received by: {', '.join(received_by)}.",
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"}
                         for m in (*ch.events, *ch.also_accepts)},
        }
        if "{teacher_id}" in stem:
            channel["parameters"] = {"teacher_id": {"description": "The teacher deployment (spec key under teachers:)."}}
        channels[key] = channel
        operations[f"send_{key}"] = {"action": "send", "channel": {"$ref": f"#/channels/{key}"},
                                     "summary": ", ".join(senders)}
        operations[f"receive_{key}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"},
                                        "summary": ", ".join(received_by)}
    for model in every_model:
        messages[model.__name__] = {"name": model.__name__, "contentType": "application/json",
                                    "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
                                    "payload": {"$ref": f"#/components/schemas/{model.__name__}"}}
    for model in {m for ch in CHANNELS for m in ch.also_accepts}:
        messages[model.__name__] = {
            "name": model.__name__, "contentType": "application/json",
            "summary": "A bare task from an upstream producer: the JSONL line of `distillery submit`, without the "
                       "event envelope; task_id is optional (computed as submit computes it). The router validates "
                       "it as submit does and wraps it in a TaskSubmitted; an invalid one is dead-lettered.",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Distillery", "version": VERSION,
                 "description": "Event contracts of the Distillery pipeline (pydantic models in distillery.contracts.events; "
                                "protobuf mirror in proto/distill/v1). Every payload carries schema_version, event_id, "
                                "produced_by, produced_at and trace."},
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "localhost:9092", "protocol": "kafka",
                              "description": "KAFKA_BOOTSTRAP_SERVERS; topic prefix DISTILLERY_TOPIC_PREFIX"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas(every_model)},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path("docs/asyncapi.json")
    out.write_text(render())
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
