"""The trainer's handler called in-process: a training request in, StudentTrained or a dead letter
out. The topics are plain lists behind a fake reader and the training run is a fake (the real runs
are tests/unit/test_ml.py and test_train_methods.py): nothing here loads a model or a broker."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from distillery.contracts.events import (
    CandidateGenerated,
    Provenance,
    SampleCurated,
    SampleRetracted,
    StudentTrained,
    Task,
    Trace,
    TrainingRequested,
    Variant,
)
from distillery.contracts.spec import load_spec
from distillery.runtime.bus import DeadLetter, In, Out
from distillery.runtime.kafka import Replayed
from distillery_trainer.handlers import TrainerDeps, TrainerSettings, on_training_requested
from distillery_trainer.training import Inputs
from tests.support import ROOT

SPEC = load_spec(ROOT / "examples" / "spec.yaml")


def sample(i: int) -> SampleCurated:
    return SampleCurated(
        sample_id=f"s{i}", unit="math_steps", pathway="answer", pool="train", prompt=f"q{i}", final=f"#### {i}",
        content_hash=f"h{i}", provenance=Provenance(task_id=f"t{i}", candidate_id=f"c{i}", teacher_id="alpha",
                                                    judge_version="j", verdict_id=f"v{i}"),
        produced_by="editor@test", trace=Trace(task_id=f"t{i}"),
    )


def retraction(i: int) -> SampleRetracted:
    return SampleRetracted(retraction_id=f"x{i}", sample_id=f"s{i}", judge_version="human", reason="rejected",
                           produced_by="editor@test")


def candidate(i: int) -> CandidateGenerated:
    return CandidateGenerated(candidate_id=f"c{i}", request_id=f"r{i}", teacher_id="alpha", strategy="single",
                              route_reason="test", expected_candidates=1, text=f"#### {i}", produced_by="teacher@test",
                              task=Task(task_id=f"t{i}", unit="math_steps", prompt=f"q{i}"))


class Topics:
    """The topics as lists, read the way runtime.kafka.replay reads them: one partition, up to ``upto``."""

    def __init__(self, events: dict[str, list]) -> None:
        self.events = events
        self.reads: list[tuple[str, dict[int, int] | None]] = []

    async def read(self, topic: str, parse, upto: dict[int, int] | None) -> Replayed:
        self.reads.append((topic, upto))
        events = self.events.get(topic, [])[: (upto or {}).get(0, len(self.events.get(topic, [])))]
        return Replayed([(None, e) for e in events], {0: len(events)})


class Runs:
    """Stands in for training.run: records what it was given, returns a lineage record."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.inputs: list[Inputs] = []

    def __call__(self, name, spec, inputs, topic, artifact_root, device, progress, variant) -> dict:
        if self.error is not None:
            raise self.error
        self.inputs.append(inputs)
        progress(3, 3, 0.5)
        manifest = {"samples": len(inputs.samples), "sample_ids": [s.sample_id for s in inputs.samples],
                    "snapshot": inputs.offsets, "kd_examples": 0}
        student_id = f"student_{name}{len(inputs.samples):030d}"
        return {"student_id": student_id, "student": name, "version": student_id[8:20],
                "artifact_dir": str(artifact_root / name / student_id), "base_model": spec.students[name].base,
                "recipe": {}, "manifest": manifest, "loss_curve": [1.0, 0.5], "train_seconds": 2.0,
                "train_cost_usd": 0.01, "tokens": 100}


def deps_with(topics: Topics, run: Runs, tmp_path) -> TrainerDeps:
    settings = TrainerSettings(topic_prefix="unit", artifact_dir=tmp_path)
    return TrainerDeps(spec=SPEC, settings=settings, topics=settings.topics, read=topics.read, run=run)


def item(event: TrainingRequested, offset: int = 0) -> In[TrainingRequested]:
    record = ConsumerRecord("unit.training.requests.v1", 0, offset, 0, 0, None, event.model_dump_json().encode(),
                            None, 0, 0, [])
    return In(event, record)


def request(student: str = "tiny", **fields) -> TrainingRequested:
    return TrainingRequested(request_id=f"req_{student}", student=student, produced_by="cli@test", **fields)


def test_a_request_trains_on_the_live_samples_of_its_snapshot_and_announces_the_student(tmp_path) -> None:
    topics_of = TrainerSettings(topic_prefix="unit").topics
    # s0 is retracted before the snapshot's end; s3 arrives after it
    topics = Topics({topics_of.samples: [sample(0), sample(1), retraction(0), sample(2), sample(3)]})
    runs = Runs()
    deps = deps_with(topics, runs, tmp_path)
    event = request(snapshot={topics_of.samples: {"0": 4}})
    before = REGISTRY.get_sample_value("distillery_trainer_runs_total", {"student": "tiny"}) or 0.0

    (out,) = asyncio.run(on_training_requested([item(event)], deps))

    # whether the request was trained already, then the pinned snapshot; no candidates for plain SFT
    assert topics.reads == [(topics_of.students, None), (topics_of.samples, {0: 4})]
    (inputs,) = runs.inputs
    assert [s.sample_id for s in inputs.samples] == ["s1", "s2"] and inputs.candidates == []
    assert inputs.offsets == {topics_of.samples: {0: 4}}
    assert isinstance(out, Out) and out.topic == topics_of.students
    trained = out.event
    assert isinstance(trained, StudentTrained) and trained.student == "tiny"
    assert trained.manifest["retracted"] == 1 and trained.manifest["samples"] == 2
    assert trained.trace.causation_id == event.event_id and trained.produced_by == deps.produced_by
    assert REGISTRY.get_sample_value("distillery_trainer_runs_total", {"student": "tiny"}) == before + 1
    assert REGISTRY.get_sample_value("distillery_trainer_step", {"student": "tiny"}) == 3
    assert REGISTRY.get_sample_value("distillery_trainer_dataset_samples", {"student": "tiny"}) == 2


def test_a_request_already_trained_is_not_trained_again(tmp_path) -> None:
    """Redelivered after its student was published (a crash before the commit), or a round published
    twice: the students topic names the request as a cause, so nothing is trained or published."""
    topics_of = TrainerSettings(topic_prefix="unit").topics
    event = request()
    runs = Runs()
    deps = deps_with(Topics({topics_of.samples: [sample(0)]}), runs, tmp_path)
    (first,) = asyncio.run(on_training_requested([item(event)], deps))
    topics = Topics({topics_of.samples: [sample(0)], topics_of.students: [first.event]})

    assert asyncio.run(on_training_requested([item(event, offset=1)], deps_with(topics, runs, tmp_path))) == []
    assert len(runs.inputs) == 1  # trained once


def test_a_raw_bucket_variant_reads_the_candidates_snapshot_too(tmp_path) -> None:
    topics_of = TrainerSettings(topic_prefix="unit").topics
    topics = Topics({topics_of.samples: [sample(0)], topics_of.candidates: [candidate(0), candidate(1)]})
    runs = Runs()
    variant = Variant(name="naive", bucket="multi_teacher")
    (out,) = asyncio.run(on_training_requested([item(request(variant=variant))], deps_with(topics, runs, tmp_path)))

    assert [topic for topic, _ in topics.reads] == [topics_of.students, topics_of.samples, topics_of.candidates]
    (inputs,) = runs.inputs
    assert [c.candidate_id for c in inputs.candidates] == ["c0", "c1"]
    assert inputs.offsets == {topics_of.samples: {0: 1}, topics_of.candidates: {0: 2}}
    assert out.event.variant == variant


def test_unknown_students_and_untrainable_requests_are_dead_lettered_and_the_batch_goes_on(tmp_path) -> None:
    topics = Topics({})
    unknown = asyncio.run(on_training_requested([item(request("astrologer")), item(request(), 1)],
                                                deps_with(topics, Runs(), tmp_path)))
    dead, trained = unknown
    assert isinstance(dead, DeadLetter) and dead.reason == "unknown_student" and "astrologer" in dead.error
    assert dead.record.offset == 0 and isinstance(trained, Out) and trained.event.student == "tiny"

    failing = Runs(ValueError("no samples of unit 'math_steps' in the snapshot"))
    (dead,) = asyncio.run(on_training_requested([item(request())], deps_with(topics, failing, tmp_path)))
    assert isinstance(dead, DeadLetter) and dead.reason == "untrainable" and "no samples" in dead.error


class GarbledTopics(Topics):
    """The samples topic also holds two records that are not sample events (replay skips them)."""

    async def read(self, topic: str, parse, upto: dict[int, int] | None) -> Replayed:
        replayed = await super().read(topic, parse, upto)
        return Replayed(replayed.items, replayed.end_offsets, skipped=2)


def test_records_that_are_not_samples_are_counted_never_trained_and_never_skipped_silently(tmp_path) -> None:
    topics_of = TrainerSettings(topic_prefix="unit").topics
    runs = Runs()
    deps = deps_with(GarbledTopics({topics_of.samples: [sample(0), sample(1)]}), runs, tmp_path)
    labels = {"topic": topics_of.samples}
    before = REGISTRY.get_sample_value("distillery_trainer_unreadable_records_total", labels) or 0.0
    (out,) = asyncio.run(on_training_requested([item(request())], deps))
    assert isinstance(out, Out) and [s.sample_id for s in runs.inputs[0].samples] == ["s0", "s1"]
    assert REGISTRY.get_sample_value("distillery_trainer_unreadable_records_total", labels) == before + 2
