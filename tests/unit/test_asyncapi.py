"""The committed AsyncAPI document is current and valid AsyncAPI 3.0 (the official JSON schema
from the @asyncapi/specs npm package, tests/data/asyncapi-3.0.0.schema.json, Apache-2.0)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from distillery.contracts import events
from distillery.contracts.channels import PARTITIONS
from distillery_gen import asyncapi

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert (ROOT / "docs" / "asyncapi.json").read_text() == asyncapi.render(), \
        "run: python -m distillery_gen.asyncapi"


def test_it_is_valid_asyncapi_3() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = asyncapi.document()
    assert [e.message for e in validator.iter_errors(document)] == []
    document["channels"]["tasks"]["address"] = 5  # and the validator does reject a broken one
    assert list(validator.iter_errors(document))


def test_every_topic_and_every_event_is_documented() -> None:
    document = asyncapi.document()
    addresses = {c["address"] for c in document["channels"].values()}
    for stem in PARTITIONS:
        wanted = "distill.generation.requests.{teacher_id}.v1" if stem == "generation.requests" else f"distill.{stem}.v1"
        assert wanted in addresses, stem
    event_classes = {c.__name__ for c in vars(events).values()
                     if isinstance(c, type) and issubclass(c, events.Event) and c is not events.Event}
    assert event_classes | {"Task"} == set(document["components"]["messages"])  # Task: the bare task at the front door
    assert "Task" in document["channels"]["tasks"]["messages"]
    schema = document["components"]["schemas"]["CandidateGenerated"]
    assert "logprobs" in schema["properties"] and "TokenLogprobs" in document["components"]["schemas"]
