"""The closed loop in the spec and in the trainer's rounds: the ``promotion`` policy and ``backend:
student`` teachers are validated with errors naming the field; a unit a stop signal holds is left out
of the student's automatic rounds (distillery_trainer.handlers.rounds_due over a fake topic reader)
until it is resumed or real data arrives."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from distillery.contracts.events import (
    EvaluationCompleted,
    LoopDecided,
    Provenance,
    SampleCurated,
    TrainingRequested,
    loop_decision_id,
)
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import CapabilitySpec, parse_spec
from distillery.runtime.kafka import Replayed
from distillery_trainer import rounds
from distillery_trainer.handlers import TrainerDeps, TrainerSettings, rounds_due, without_units
from tests.support import DEPLOYMENT, loop_spec, loop_spec_data

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


# --- the spec: promotion policies and student deployments ------------------------------------------------


def spec_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(data, "spec.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("spec.yaml: ")
    return message


def with_teacher(**teacher: object) -> dict:
    data = loop_spec_data()
    data["teachers"][DEPLOYMENT] = teacher
    return data


def test_a_promotion_policy_parses_with_its_defaults_and_its_deployment_is_routed() -> None:
    data = loop_spec_data()
    data["promotion"]["tiny"] = {"deployment": DEPLOYMENT}
    spec = parse_spec(data)
    policy = spec.promotion["tiny"]
    assert (policy.deployment, policy.share, policy.window, policy.live_tolerance) == (DEPLOYMENT, 0.1, 50, None)
    assert spec.teachers[DEPLOYMENT].backend == "student" and spec.teachers[DEPLOYMENT].student == "tiny"
    assert DEPLOYMENT in spec.routed_teachers()  # it gets a deployment although no unit routes to it
    without = loop_spec_data()
    del without["promotion"]
    assert DEPLOYMENT not in parse_spec(without).routed_teachers()


def test_a_promotion_of_an_unknown_student_is_an_error() -> None:
    data = loop_spec_data()
    data["promotion"]["nobody"] = {"deployment": DEPLOYMENT}
    assert "field 'promotion': unknown student(s) ['nobody']" in spec_error(data)


@pytest.mark.parametrize(("deployment", "teacher"), [
    ("nowhere", None),  # not a teacher of the spec
    ("qwen-coder", None),  # a teacher, but not one serving a student
    (DEPLOYMENT, {"backend": "student", "student": "smollm2"}),  # serving another student
])
def test_a_promotion_deployment_must_be_a_student_teacher_of_the_same_recipe(deployment, teacher) -> None:
    data = loop_spec_data(deployment=deployment)
    if teacher is not None:
        data["teachers"][DEPLOYMENT] = teacher
    message = spec_error(data)
    assert f"field 'promotion.tiny.deployment': '{deployment}' must be a teacher with backend 'student'" in message
    assert "student 'tiny'" in message


@pytest.mark.parametrize(("policy", "message"), [
    ({"share": 0}, "field 'promotion.tiny.share': Input should be greater than 0"),
    ({"share": 1.5}, "field 'promotion.tiny.share': Input should be less than or equal to 1"),
    ({"window": 0}, "field 'promotion.tiny.window': Input should be greater than or equal to 1"),
    ({"live_tolerance": -0.1}, "field 'promotion.tiny.live_tolerance': Input should be greater than or equal to 0"),
    ({"deployment": ""}, "field 'promotion.tiny.deployment': String should have at least 1 character"),
])
def test_bad_promotion_policies_are_errors_naming_the_field(policy, message) -> None:
    assert message in spec_error(loop_spec_data(**policy))


@pytest.mark.parametrize(("teacher_id", "teacher", "message"), [
    (DEPLOYMENT, {"backend": "student"}, f"teacher '{DEPLOYMENT}': field 'student': backend 'student' needs student"),
    ("qwen-coder", {"backend": "transformers", "model": "qwen2.5-coder-0.5b-instruct", "student": "tiny"},
     "teacher 'qwen-coder': field 'student': backend 'student' needs student"),
    (DEPLOYMENT, {"backend": "student", "student": "ghost"}, f"teacher '{DEPLOYMENT}': field 'student': unknown student 'ghost'"),
])
def test_student_teachers_are_checked_without_a_promotion_too(teacher_id, teacher, message) -> None:
    data = loop_spec_data()
    del data["promotion"]
    data["teachers"][teacher_id] = teacher
    assert message in spec_error(data)


def test_a_student_teacher_without_a_promotion_is_valid() -> None:
    data = with_teacher(backend="student", student="smollm2")
    del data["promotion"]
    assert parse_spec(data).teachers[DEPLOYMENT].student == "smollm2"


# --- the trainer: stopped units are left out of rounds ---------------------------------------------------


def test_without_units_trains_the_recipe_on_the_other_units_only() -> None:
    spec = loop_spec()
    assert without_units(spec, "tiny", []) is spec
    reduced = without_units(spec, "tiny", ["math_steps"])
    assert reduced.students["tiny"].units == ["tool_call", "tool_boundary"]
    assert reduced.students["smollm2"] == spec.students["smollm2"]
    assert spec.students["tiny"].units == ["tool_call", "tool_boundary", "math_steps"]  # the spec is unchanged
    assert reduced.students["tiny"].model_copy(update={"units": spec.students["tiny"].units}) == spec.students["tiny"]


def test_a_round_request_names_the_units_it_leaves_out() -> None:
    request = rounds.round_request("tiny", 3, "5 new samples >= every_samples 5", "trainer@test", ["math_steps"])
    assert request.exclude_units == ["math_steps"]
    assert request.reason == "round 3: 5 new samples >= every_samples 5; leaves out math_steps (stop signal)"
    assert request.request_id == rounds.round_request_id("tiny", 3)
    plain = rounds.round_request("tiny", 3, "5 new samples >= every_samples 5", "trainer@test")
    assert plain.exclude_units == [] and plain.reason == "round 3: 5 new samples >= every_samples 5"
    assert "exclude_units" not in plain.model_dump()  # off the wire while empty


SETTINGS = TrainerSettings(topic_prefix="unit")
TOPICS = SETTINGS.topics
GAIN = {"marginal_gain": "gain_0.001_per_1k_below_0.02"}


def round_spec(units: list[str], every_samples: int = 3) -> CapabilitySpec:
    data = loop_spec_data()
    data["students"]["tiny"]["units"] = units
    data["rounds"] = {"tiny": {"every_samples": every_samples}}
    return parse_spec(data)


class Topics:
    """The topics as lists, read the way runtime.kafka.replay reads them: one partition, in order."""

    def __init__(self, events: dict[str, list]) -> None:
        self.events = events

    async def read(self, topic: str, parse, upto: dict[int, int] | None) -> Replayed:
        events = self.events.get(topic, [])
        items = [(ConsumerRecord(topic, 0, offset, 0, 0, None, b"", None, 0, 0, ()), e) for offset, e in enumerate(events)]
        return Replayed(items, {0: len(events)})


def sample(i: int, unit: str, minutes: int = 0, origin: str = "teacher") -> SampleCurated:
    return SampleCurated(
        sample_id=f"s{i}", unit=unit, pathway="answer", pool="train", prompt=f"q{i}", final=f"#### {i}",
        content_hash=f"h{i}", origin=origin, produced_by="editor@test", produced_at=T0 + timedelta(minutes=minutes),
        provenance=Provenance(task_id=f"t{i}", candidate_id=f"c{i}", teacher_id="qwen-coder", judge_version="j",
                              verdict_id=f"v{i}"),
    )


def stopped_by(unit: str) -> EvaluationCompleted:
    return EvaluationCompleted(evaluation_id="evaluation_1", student_id="student_a", scores=[], roi={},
                               report_path="report.md", student="tiny", unit_signals={unit: GAIN},
                               produced_by="evaluator@test", produced_at=T0)


def resumed(unit: str) -> LoopDecided:
    return LoopDecided(decision_id=loop_decision_id("resume", "tiny", unit, "evaluation_1"), action="resume",
                       student="tiny", unit=unit, produced_by="cli@resume", produced_at=T0 + timedelta(minutes=1))


def due(spec: CapabilitySpec, events: dict[str, list]) -> list[TrainingRequested]:
    deps = TrainerDeps(spec=spec, settings=SETTINGS, topics=TOPICS, read=Topics(events).read)
    outs = asyncio.run(rounds_due(deps, now=T0 + timedelta(hours=1)))
    assert all(o.topic == TOPICS.training_requests for o in outs)
    return [o.event for o in outs]


def stopped_gauge(unit: str) -> float | None:
    return REGISTRY.get_sample_value("distillery_trainer_unit_stopped", {"student": "tiny", "unit": unit})


def test_a_stopped_only_unit_requests_no_round_however_many_samples_until_it_is_resumed() -> None:
    spec = round_spec(["math_steps"])
    samples = [sample(i, "math_steps", minutes=i) for i in range(10)]
    assert [r.exclude_units for r in due(spec, {TOPICS.samples: samples})] == [[]]  # not stopped: due

    topics = {TOPICS.samples: samples, TOPICS.evaluations: [stopped_by("math_steps")]}
    assert due(spec, topics) == []
    assert stopped_gauge("math_steps") == 1.0

    (request,) = due(spec, {**topics, TOPICS.promotions: [resumed("math_steps")]})
    assert request.exclude_units == [] and request.request_id == rounds.round_request_id("tiny", 1)
    assert "stop signal" not in request.reason
    assert stopped_gauge("math_steps") == 0.0


def test_real_samples_of_a_stopped_unit_bring_it_back_into_the_rounds() -> None:
    spec = round_spec(["math_steps"], every_samples=1)
    topics = {TOPICS.samples: [sample(0, "math_steps")], TOPICS.evaluations: [stopped_by("math_steps")]}
    assert due(spec, topics) == []
    topics[TOPICS.samples] = [sample(0, "math_steps"), sample(1, "math_steps", minutes=5, origin="real")]
    (request,) = due(spec, topics)
    assert request.exclude_units == []


def test_a_round_leaves_the_stopped_unit_out_and_counts_only_the_other_units_samples() -> None:
    spec = round_spec(["tool_call", "math_steps"], every_samples=3)
    stopped = [sample(i, "math_steps") for i in range(5)]
    topics = {TOPICS.samples: [*stopped, sample(10, "tool_call"), sample(11, "tool_call")],
              TOPICS.evaluations: [stopped_by("math_steps")]}
    assert due(spec, topics) == [], "two new tool_call samples: the stopped unit's five do not count"

    topics[TOPICS.samples] = [*topics[TOPICS.samples], sample(12, "tool_call")]
    (request,) = due(spec, topics)
    assert request.exclude_units == ["math_steps"]
    assert request.reason == "round 1: 3 new samples >= every_samples 3; leaves out math_steps (stop signal)"
    assert (stopped_gauge("math_steps"), stopped_gauge("tool_call")) == (1.0, 0.0)

    topics[TOPICS.promotions] = [resumed("math_steps")]
    (request,) = due(spec, topics)
    assert request.exclude_units == [] and request.reason.startswith("round 1: 8 new samples")
