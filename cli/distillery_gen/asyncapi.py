"""The AsyncAPI 3.0 document of the pipeline: every topic, who sends and receives on it, and the
JSON schema of its payload, generated from the topic table and the pydantic event models.

``python -m distillery_gen.asyncapi [OUT]`` writes it (default ``docs/asyncapi.json``); a test fails
when the committed document differs from what this writes, so it cannot drift from the code.
The topic and event lists are the code's own (``topics.PARTITIONS``, ``events``), not a copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distillery import __version__ as VERSION
from distillery.contracts import events
from distillery.contracts.channels import PARTITIONS

# topic stem -> (payload models, senders, receivers). The per-teacher request topic is one channel
# with a {teacher_id} parameter.
CHANNELS: dict[str, tuple[list[type[BaseModel]], list[str], list[str]]] = {
    "tasks": ([events.TaskSubmitted], ["upstream producers", "router (gRPC ingest)"], ["router"]),
    "generation.requests.{teacher_id}": ([events.GenerationRequested], ["router"], ["teacher"]),
    "candidates": ([events.CandidateGenerated], ["teacher"], ["judge", "trainer (raw buckets, logit distillation)"]),
    "verdicts": ([events.CandidatesJudged], ["judge"], ["editor", "router (learned routing)", "evaluator"]),
    "regeneration": ([events.RegenerationRequested], ["judge"], ["router"]),
    "samples": ([events.SampleCurated, events.SampleRetracted], ["editor", "distillery samples import"], ["trainer"]),
    "reviews": ([events.ReviewDecided], ["distillery review decide"], ["editor"]),
    "training.requests": ([events.TrainingRequested], ["distillery train", "distillery attribute"], ["trainer"]),
    "students": ([events.StudentTrained], ["trainer"], ["evaluator"]),
    "evaluations": ([events.EvaluationCompleted], ["evaluator"], ["distillery report", "distillery attribute"]),
    "dlq": ([events.EventDeadLettered], ["every service"], ["operators"]),
}


def _partitions(stem: str) -> int:
    return PARTITIONS["generation.requests" if stem.startswith("generation.requests") else stem]


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
    every_model = [m for models, _, _ in CHANNELS.values() for m in models]
    for stem, (models, senders, receivers) in CHANNELS.items():
        key = stem.replace(".", "_").replace("{teacher_id}", "teacher")
        channel: dict[str, Any] = {
            "address": f"{prefix}.{stem}.v1",
            "description": f"Kafka topic, {_partitions(stem)} partition(s), keyed by the event's entity id or task. "
                           f"Sent by: {', '.join(senders)}. Received by: {', '.join(receivers)}.",
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in models},
        }
        if "{teacher_id}" in stem:
            channel["parameters"] = {"teacher_id": {"description": "The teacher deployment (spec key under teachers:)."}}
        channels[key] = channel
        operations[f"send_{key}"] = {"action": "send", "channel": {"$ref": f"#/channels/{key}"},
                                     "summary": ", ".join(senders)}
        operations[f"receive_{key}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"},
                                        "summary": ", ".join(receivers)}
    for model in every_model:
        messages[model.__name__] = {"name": model.__name__, "contentType": "application/json",
                                    "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
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
