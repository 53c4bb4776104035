"""Event contracts: envelope behaviour, golden wire files (v1), and deterministic ids.

The golden files under tests/golden/<EventName>.v1.json pin the wire format: any added,
removed, renamed or re-typed field (or a changed default that shows on the wire) fails here.
Changing the wire format means a new schema_version, an upcaster, and a new golden file.
"""

from __future__ import annotations

import json
import typing
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from distillery.contracts import events, ids
from distillery.contracts.events import (
    Event,
    NewerSchema,
    Reference,
    Task,
    TaskSubmitted,
    Trace,
    TrainingRequested,
    known_version,
    new_task,
    parse_event,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
EVENT_CLASSES = {cls.__name__: cls for cls in Event.__subclasses__()}
AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def current_version(name: str) -> int:
    return EVENT_CLASSES[name].model_fields["schema_version"].default


def golden_path(name: str, version: int | None = None) -> Path:
    return GOLDEN / f"{name}.v{version or current_version(name)}.json"


def golden(name: str, version: int | None = None) -> dict:
    """The golden wire file of ``name`` at ``version`` (default: the current schema version)."""
    return json.loads(golden_path(name, version).read_text())


def a_task() -> Task:
    return new_task("math_steps", "What is 3 + 4?", reference=Reference(answer="7"))


# --- envelope ----------------------------------------------------------------------------


def test_events_are_frozen() -> None:
    event = TrainingRequested(request_id="r1", student="tiny", produced_by="cli@train")
    with pytest.raises(ValidationError):
        event.student = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.trace.task_id = "x"  # type: ignore[misc]


def test_events_forbid_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrainingRequested(request_id="r1", student="tiny", produced_by="cli@train", colour="blue")
    with pytest.raises(ValidationError, match="extra"):
        Task(task_id="t", unit="u", prompt="p", colour="blue")


def test_event_id_is_the_entity_id() -> None:
    task = a_task()
    assert TaskSubmitted(task_id=task.task_id, task=task, produced_by="x").event_id == task.task_id
    assert TrainingRequested(request_id="r9", student="tiny", produced_by="x").event_id == "r9"


def test_event_id_is_the_same_for_a_redelivery() -> None:
    task = a_task()
    one = TaskSubmitted(task_id=task.task_id, task=task, produced_by="a@1")
    two = TaskSubmitted(task_id=task.task_id, task=task, produced_by="b@2")
    assert one.event_id == two.event_id
    assert one.produced_at.tzinfo is not None


def test_key_is_the_task_for_task_scoped_events_else_the_entity() -> None:
    request = TrainingRequested(request_id="r1", student="tiny", produced_by="x")
    assert request.key == "r1"
    traced = TrainingRequested(request_id="r1", student="tiny", produced_by="x", trace=Trace(task_id="task_1"))
    assert traced.key == "task_1"


def test_parse_event_round_trips_bytes_str_and_dict() -> None:
    task = a_task()
    event = TaskSubmitted(task_id=task.task_id, task=task, produced_by="cli@submit", produced_at=AT,
                          trace=Trace(task_id=task.task_id))
    wire = event.model_dump_json()
    assert parse_event(TaskSubmitted, wire.encode()) == event
    assert parse_event(TaskSubmitted, wire) == event
    assert parse_event(TaskSubmitted, json.loads(wire)) == event


def test_parse_event_rejects_a_payload_of_another_type() -> None:
    wire = TrainingRequested(request_id="r1", student="tiny", produced_by="x").model_dump_json()
    with pytest.raises(ValidationError):
        parse_event(TaskSubmitted, wire)


def test_new_task_id_is_the_content_hash_of_unit_prompt_and_tools() -> None:
    task = new_task("tool_call", "Weather in Paris?", tools=[{"name": "weather", "description": "", "parameters": {}}])
    assert task.task_id == ids.task_id_for("tool_call", "Weather in Paris?",
                                           [{"name": "weather", "description": "", "parameters": {}}])


# --- golden wire files (one per event and schema version) -----------------------------------------


def test_every_event_class_has_a_golden_file_for_every_version() -> None:
    for name in EVENT_CLASSES:
        for version in range(1, current_version(name) + 1):
            assert golden_path(name, version).is_file(), f"{name} v{version}"
    names = {p.name.split(".v")[0] for p in GOLDEN.glob("*.v*.json")}
    assert names == set(EVENT_CLASSES)


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_golden_file_parses_and_dumps_back_exactly(name: str) -> None:
    data = golden(name)
    event = parse_event(EVENT_CLASSES[name], golden_path(name).read_bytes())
    assert event.schema_version == current_version(name)
    assert event.model_dump(mode="json") == data
    assert json.loads(event.model_dump_json()) == data  # what actually goes on the wire


@pytest.mark.parametrize("name", sorted(n for n in EVENT_CLASSES if current_version(n) > 1))
def test_an_older_version_is_upcast_not_rejected(name: str) -> None:
    """Each older golden file is the same event as the current one, on the older wire format."""
    current = parse_event(EVENT_CLASSES[name], golden_path(name).read_bytes())
    for version in range(1, current_version(name)):
        raw = golden_path(name, version).read_bytes()
        assert json.loads(raw)["schema_version"] == version
        assert parse_event(EVENT_CLASSES[name], raw) == current
        assert parse_event(EVENT_CLASSES[name], json.loads(raw)) == current


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_golden_field_names_match_the_model(name: str) -> None:
    data = golden(name)
    cls = EVENT_CLASSES[name]
    # a field added to a shipped version stays off the wire while it holds its default (events.added_fields)
    assert set(data) == set(cls.model_fields) - set(cls.added_fields)
    assert {"schema_version", "event_id", "produced_by", "produced_at", "trace"} <= set(data)
    assert set(data["trace"]) == {"task_id", "causation_id"}
    assert data["produced_at"] == "2024-05-01T12:00:00Z"


ADDED_VALUES = {"shadow": True, "exclude_units": ["math_steps"], "unit_signals": {"math_steps": {"marginal_gain": "x"}}}


@pytest.mark.parametrize("name", sorted(n for n, cls in EVENT_CLASSES.items() if cls.added_fields))
def test_an_added_field_is_on_the_wire_once_set_and_reads_back(name: str) -> None:
    cls = EVENT_CLASSES[name]
    data = golden(name)
    for field in cls.added_fields:
        event = parse_event(cls, {**data, field: ADDED_VALUES[field]})
        wire = json.loads(event.model_dump_json())
        assert wire[field] == ADDED_VALUES[field]
        assert parse_event(cls, json.dumps(wire)) == event
    assert "fields" not in json.loads(events.Reference(answer="1").model_dump_json())
    assert json.loads(events.Reference(fields={}).model_dump_json())["fields"] == {}  # set, though empty


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_golden_event_id_is_its_entity_id(name: str) -> None:
    cls = EVENT_CLASSES[name]
    data = golden(name)
    assert data["event_id"] == data[cls.id_field]
    data.pop("event_id")
    assert parse_event(cls, data).event_id == data[cls.id_field]  # derived when absent


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Task``, ``Usage | None``, ``list[ToolCall]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for arg in typing.get_args(annotation) if (m := _model_in(arg)) is not None), None)


def _with_additions(cls: type[BaseModel], data: dict) -> dict:
    """The object as a newer producer writes it: an extra field in it and in every nested model object."""
    out = {**data, "added_by_a_newer_producer": {"x": 1}}
    for name, field in cls.model_fields.items():
        sub, value = _model_in(field.annotation), data.get(name)
        if sub is not None and isinstance(value, dict):
            out[name] = _with_additions(sub, value)
        elif sub is not None and isinstance(value, list):
            out[name] = [_with_additions(sub, v) if isinstance(v, dict) else v for v in value]
    return out


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_readers_ignore_fields_from_a_newer_producer_and_never_republish_them(name: str) -> None:
    cls, data = EVENT_CLASSES[name], golden(name)
    plain = parse_event(cls, json.dumps(data))
    tolerant = parse_event(cls, json.dumps(_with_additions(cls, data)))
    assert tolerant.model_dump() == plain.model_dump()
    assert "added_by_a_newer_producer" not in tolerant.model_dump_json()


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_writers_stay_strict(name: str) -> None:
    cls, data = EVENT_CLASSES[name], golden(name)
    with pytest.raises(ValidationError):
        cls(**parse_event(cls, json.dumps(data)).model_dump(), surprise=1)


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_a_newer_schema_version_is_refused_naming_both_versions(name: str) -> None:
    cls, data = EVENT_CLASSES[name], golden(name)
    known = known_version(cls)
    newer = {**data, "schema_version": known + 1}
    for payload in (json.dumps(newer), newer):
        with pytest.raises(NewerSchema, match=f"{name} schema_version {known + 1} is newer than this reader's {known}"):
            parse_event(cls, payload)
    broken = {**newer, cls.id_field: 12}  # a newer shape that does not validate still says why
    with pytest.raises(NewerSchema):
        parse_event(cls, json.dumps(broken))


def test_golden_nested_shapes() -> None:
    task = golden("TaskSubmitted")["task"]
    assert set(task) == set(Task.model_fields)
    assert set(task["reference"]) == {"answer", "tool_calls", "no_call"}
    assert set(task["tools"][0]) == {"name", "description", "parameters"}
    cand = golden("CandidatesJudged")["candidates"][0]
    assert set(cand["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert set(cand["source"]) == {"topic", "partition", "offset"}
    assert set(cand["tool_calls"][0]) == {"name", "arguments"}
    assert set(golden("SampleCurated")["provenance"]) == {
        "task_id", "candidate_id", "teacher_id", "judge_version", "verdict_id", "source"}
    assert set(golden("EvaluationCompleted")["scores"][0]) == {
        "unit", "subject", "n", "accuracy", "mean_latency_s", "cost_per_request_usd", "mean_output_tokens", "unanswered"}


def test_golden_ids_are_consistent_with_their_causes() -> None:
    cand = golden("CandidateGenerated")
    assert cand["candidate_id"] == ids.candidate_id_for(cand["request_id"])
    request = golden("GenerationRequested")
    assert request["request_id"] == ids.request_id_for(request["task"]["task_id"], request["teacher_id"], 1)
    verdict = golden("CandidatesJudged")
    assert verdict["verdict_id"] == ids.verdict_id_for(verdict["task"]["task_id"], verdict["judge_version"])


def test_parse_event_upcasts_an_older_schema_version(monkeypatch) -> None:
    def upcast_v0_v1(data: dict) -> dict:
        data = dict(data)
        data["student"] = data.pop("student_name")
        data["schema_version"] = 1
        return data

    monkeypatch.setitem(events.UPCASTERS, ("TrainingRequested", 0), upcast_v0_v1)
    old = golden("TrainingRequested")
    old["schema_version"] = 0
    old["student_name"] = old.pop("student")
    for payload in (json.dumps(old), json.dumps(old).encode(), old):
        event = parse_event(TrainingRequested, payload)
        assert event.schema_version == 1
        assert event.model_dump(mode="json") == golden("TrainingRequested")


# --- ids -------------------------------------------------------------------------------------------


def test_content_id_is_deterministic_prefixed_and_sized() -> None:
    one = ids.content_id("x", "a", 1, {"k": [1, 2]})
    assert one == ids.content_id("x", "a", 1, {"k": [1, 2]})
    assert one.startswith("x_") and len(one) == len("x_") + 24
    assert all(c in "0123456789abcdef" for c in one[2:])


def test_content_id_ignores_dict_key_order_but_not_part_order() -> None:
    assert ids.content_id("x", {"a": 1, "b": 2}) == ids.content_id("x", {"b": 2, "a": 1})
    assert ids.content_id("x", "a", "b") != ids.content_id("x", "b", "a")
    assert ids.content_id("x", "ab") != ids.content_id("x", "a", "b")


def test_id_helpers_have_their_prefixes_and_depend_on_every_cause() -> None:
    assert ids.task_id_for("u", "p").startswith("task_")
    assert ids.task_id_for("u", "p") == ids.task_id_for("u", "p", [])
    assert ids.task_id_for("u", "p") != ids.task_id_for("v", "p") != ids.task_id_for("u", "q")
    assert ids.request_id_for("t", "teacher").startswith("req_")
    assert ids.request_id_for("t", "teacher", 1) != ids.request_id_for("t", "teacher", 2)
    assert ids.request_id_for("t", "a") != ids.request_id_for("t", "b")
    assert ids.candidate_id_for("req_1").startswith("cand_")
    assert ids.candidate_id_for("req_1") != ids.candidate_id_for("req_2")
    assert ids.verdict_id_for("t", "v1").startswith("verdict_")
    assert ids.verdict_id_for("t", "v1") != ids.verdict_id_for("t", "v2")
    assert ids.sample_id_for("c", "v1", "answer").startswith("sample_")
    assert ids.sample_id_for("c", "v1", "answer") != ids.sample_id_for("c", "v1", "process")
    assert ids.sample_id_for("c", "v1", "answer") != ids.sample_id_for("c", "v2", "answer")


def test_normalized_hash_ignores_case_and_whitespace() -> None:
    base = ids.normalized_hash("Add 3 and 4.\n#### 7")
    assert ids.normalized_hash("  add   3 AND 4. #### 7\n") == base
    assert ids.normalized_hash("add 3 and 4.\t\t####   7") == base
    assert len(base) == 32


def test_normalized_hash_keeps_what_matters() -> None:
    assert ids.normalized_hash("#### 7") != ids.normalized_hash("#### 8")
    assert ids.normalized_hash("a b") != ids.normalized_hash("ab")


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_a_record_nested_too_deeply_is_a_value_error_never_a_recursion_error(name: str) -> None:
    deep = b'{"schema_version": 1, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(ValueError):
        parse_event(EVENT_CLASSES[name], deep)
