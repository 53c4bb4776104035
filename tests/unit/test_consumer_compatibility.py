"""Per-consumer compatibility (issue 14): version skew at every consumer of every service.

Each service's subscriptions run in-process on FastStream's in-memory broker (tests.support's
InMemoryService), with the fakes of the service's handler tests where a handler reads topics or
trains. Each consumed topic gets (a) the golden wire file of its event, the previous release's
format, (b) the same event as a newer producer writes it, with an unknown field at the top level
and in every nested object (test_contracts' ``_with_additions``), and (c) the event with a
``schema_version`` one above the reader's. (a) and (b) must be accepted and handled alike, and the
unknown field must reach nothing the service publishes (tolerant readers, strict writers); (c) is
dead-lettered as ``newer_schema``, naming both versions. The trainer also reads the samples topic
(v1 and v2 golden files) through its snapshot reader: v1 and v2 train alike, a newer sample too.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.contracts.channels import BY_STEM
from distillery.contracts.events import EventDeadLettered, known_version, parse_event, parse_sample_record
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import parse_spec
from distillery.domain.backends import make_backend
from distillery.runtime.kafka import Replayed
from distillery.runtime.wiring import Out
from distillery_editor import handlers as editor
from distillery_evaluator import handlers as evaluator
from distillery_judge import handlers as judge
from distillery_router import handlers as router
from distillery_router.ingest import RouterSettings
from distillery_teacher import handlers as teacher
from distillery_trainer import handlers as trainer
from tests.support import ROOT, InMemoryService
from tests.unit.test_contracts import EVENT_CLASSES, _with_additions, golden, golden_path
from tests.unit.test_evaluator_handlers import Reader, Reports, Student, topics_with
from tests.unit.test_trainer_handlers import Runs

MARK = "added_by_a_newer_producer"  # the unknown field _with_additions adds
PREFIX = "unit"  # the evaluator's fake topics live under this prefix


def example(**changes: Callable[[dict], None]) -> dict:
    data = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    for change in changes.values():
        change(data)
    return data


def router_spec():
    """Every router consumer on: retries (regeneration), a chain unit (candidates), a value unit (verdicts)."""
    def routing(data: dict) -> None:
        data["units"]["tool_call"]["max_attempts"] = 2  # the golden regeneration is tool_call's attempt 2
        data["units"]["tool_boundary"]["routing"] = {"strategy": "chain", "teachers": ["smollm2", "qwen-coder"]}
        data["units"]["math_steps"]["routing"] = {"strategy": "value", "teachers": ["smollm2", "qwen-coder"]}

    return parse_spec(example(routing=routing))


def replay_teachers(tmp_path: Path):
    """The example spec whose teachers replay a recording of the golden request's task."""
    task = golden("GenerationRequested")["task"]
    row = {"teacher_id": "qwen-coder", "task_id": task["task_id"], "prompt_tokens": 180, "completion_tokens": 22,
           "latency_s": 0.75, "confidence": 0.875, "text": golden("CandidateGenerated")["text"]}
    (tmp_path / "replay.jsonl").write_text(json.dumps(row) + "\n")

    def teachers(data: dict) -> None:
        data["teachers"] = {t: {"backend": "replay", "replay_path": str(tmp_path / "replay.jsonl")}
                            for t in data["teachers"]}

    return parse_spec(example(teachers=teachers))


class WireTopics:
    """The trainer's snapshot reader over wire records: each parsed with the reader's own parse
    function, the ones that do not parse left out and counted, as runtime.kafka.replay does."""

    def __init__(self, records: dict[str, list[bytes]]) -> None:
        self.records = records

    async def read(self, topic: str, parse: Any, upto: dict[int, int] | None) -> Replayed:
        decode = (lambda payload: parse_event(parse, payload)) if isinstance(parse, type) else parse
        items, skipped = [], 0
        for payload in self.records.get(topic, []):
            try:
                items.append((None, decode(payload)))
            except ValueError:
                skipped += 1
        return Replayed(items, {0: len(self.records.get(topic, []))}, skipped)


@dataclass
class Service:
    """One service's consumers, and how to build its deps for one run (``samples``: what the trainer's
    reader finds on the samples topic)."""

    name: str
    subscriptions: list
    deps: Callable[[ServiceSettings, Path, list[bytes]], Any]
    settings: Callable[[], ServiceSettings] = lambda: ServiceSettings(topic_prefix=PREFIX)
    # work the handler leaves for later, done now (the judge's timeout flush): more outputs to compare
    after: Callable[[Any], Awaitable[list[Out]]] | None = None
    state: Callable[[Any], Any] = lambda deps: None  # what the handler changed besides its outputs


async def judge_flush(deps) -> list[Out]:
    """The golden candidate expects a competitor: its task is judged when the aggregation times out."""
    return await judge.flush_expired_once(deps, now=time.monotonic() + 10**6)


def router_state(deps) -> Any:
    task_id = golden("TaskSubmitted")["task_id"]
    return {"table": {k: vars(v) for k, v in deps.table.stats.items()}, "index": deps.index.status(task_id)}


SERVICES = [
    Service("router", router.SUBSCRIPTIONS,
            lambda settings, tmp, samples: router.RouterDeps(spec=router_spec(), settings=settings),
            settings=lambda: RouterSettings(topic_prefix=PREFIX), state=router_state),
    Service("teacher", teacher.SUBSCRIPTIONS,
            lambda settings, tmp, samples: teacher.TeacherDeps(
                spec=(spec := replay_teachers(tmp)), settings=settings,
                backend=make_backend(spec.teachers["qwen-coder"], "qwen-coder")),
            settings=lambda: teacher.TeacherSettings(teacher_id="qwen-coder", topic_prefix=PREFIX)),
    Service("judge", judge.SUBSCRIPTIONS,
            lambda settings, tmp, samples: judge.JudgeDeps(spec=parse_spec(example()), settings=settings),
            settings=lambda: judge.JudgeSettings(topic_prefix=PREFIX), after=judge_flush),
    Service("editor", editor.SUBSCRIPTIONS,
            lambda settings, tmp, samples: editor.EditorDeps(spec=parse_spec(example()), settings=settings),
            state=lambda deps: sorted(s.sample_id for s in deps.state.live_samples(golden("CandidatesJudged")
                                                                                   ["task"]["task_id"]))),
    Service("trainer", trainer.SUBSCRIPTIONS,
            lambda settings, tmp, samples: trainer.TrainerDeps(
                spec=parse_spec(example()), settings=settings, run=Runs(),
                read=WireTopics({settings.topics.samples: samples}).read),
            settings=lambda: trainer.TrainerSettings(topic_prefix=PREFIX),
            state=lambda deps: [[s.model_dump() for s in inputs.samples] for inputs in deps.run.inputs]),
    Service("evaluator", evaluator.SUBSCRIPTIONS,
            lambda settings, tmp, samples: evaluator.EvaluatorDeps(
                spec=parse_spec(example()), settings=settings, read=Reader(topics_with()).read,
                student_outputs=Student(), write_report=Reports()),
            settings=lambda: evaluator.EvaluatorSettings(topic_prefix=PREFIX)),
]
IDS = [s.name for s in SERVICES]


def inputs_of(service: Service, deps) -> list[tuple[str, str]]:
    """(stem, event name) of every channel the service's enabled subscriptions read."""
    out = []
    for sub in service.subscriptions:
        if sub.enabled(deps):
            for stem, model in {sub.stem: sub.model, **getattr(sub, "also", {})}.items():
                assert model in BY_STEM[stem].events
                out.append((stem, model.__name__))
    return out


def newer_producer(name: str) -> dict:
    return _with_additions(EVENT_CLASSES[name], golden(name))


def newer_schema(name: str) -> dict:
    return {**golden(name), "schema_version": known_version(EVENT_CLASSES[name]) + 1}


@dataclass
class Run:
    published: dict[str, list[bytes]]  # topic -> what the service published there, as sent
    extra: list[Out]  # what ``after`` produced
    state: Any
    inputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def dead(self) -> list[EventDeadLettered]:
        return [parse_event(EventDeadLettered, b) for t, bodies in self.published.items() if t.endswith(".dlq.v1")
                for b in bodies]

    def events(self) -> list[dict]:
        """Everything published, as wire objects without the moment they were made and the run's
        producer name (each in-memory bus has its own)."""
        bodies = [b for t, bodies in sorted(self.published.items()) if not t.endswith(".dlq.v1") for b in bodies]
        bodies += [out.event.model_dump_json().encode() for out in self.extra]
        return [{k: v for k, v in json.loads(b).items() if k not in ("produced_at", "produced_by")} for b in bodies]

    def wire(self) -> bytes:
        return b"\n".join([*(b for bodies in self.published.values() for b in bodies),
                           *(out.event.model_dump_json().encode() for out in self.extra)])


RUNS = iter(range(10**6))  # a bus registers its metrics once per name: every run gets its own


async def run(service: Service, payload: Callable[[str], dict | bytes], tmp_path: Path,
              samples: list[bytes] = ()) -> Run:
    """The service's subscriptions on the in-memory broker, each consumed topic given ``payload(event name)``."""
    settings = service.settings()
    deps = service.deps(settings, tmp_path, list(samples))
    inputs = inputs_of(service, deps)
    memory = InMemoryService(service.name, service.subscriptions, deps, settings,
                             metrics_name=f"{service.name}_compat_{next(RUNS)}")
    topics = memory.bus.topics
    teacher_id = deps.params.get("teacher_id")
    consumed = {topics.of(stem, teacher_id=teacher_id) for stem, _ in inputs}
    teachers = sorted(deps.spec.teachers)
    memory.catch(*(t for t in topics.all_topics(teachers) if t not in consumed))
    async with memory:
        for stem, name in inputs:
            data = payload(name)
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
            await memory.client.publish(body, topics.of(stem, teacher_id=teacher_id), key=b"k")
    extra = await service.after(deps) if service.after else []
    return Run(memory.received, extra, service.state(deps), inputs)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The golden StudentTrained names a relative artifact dir: the evaluator writes it under here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def oldest_golden(name: str) -> bytes:
    return golden_path(name, 1).read_bytes()


@pytest.mark.parametrize("service", SERVICES, ids=IDS)
async def test_the_previous_release_and_a_newer_producer_are_read_alike_and_nothing_unknown_is_republished(
        service: Service, workdir: Path) -> None:
    plain = await run(service, oldest_golden, workdir, [oldest_golden("SampleCurated")])
    newer = await run(service, newer_producer, workdir, [json.dumps(newer_producer("SampleCurated")).encode()])

    assert plain.inputs, f"{service.name} consumes nothing under this spec"
    assert plain.dead == [] and newer.dead == [], [d.error for d in plain.dead + newer.dead]
    assert plain.events(), f"{service.name} published nothing for its golden inputs {plain.inputs}"
    assert not [e for e in plain.events() if e.get("error")], "the golden inputs are handled, not failed"
    assert newer.events() == plain.events()
    assert newer.state == plain.state
    assert MARK.encode() not in newer.wire()


@pytest.mark.parametrize("service", SERVICES, ids=IDS)
async def test_a_newer_schema_version_is_dead_lettered_naming_both_versions(service: Service, workdir: Path) -> None:
    result = await run(service, lambda name: newer_schema(name), workdir)
    assert result.events() == [], "a record of a newer schema is never handled"
    wanted = sorted(f"newer_schema: {name} schema_version {known_version(EVENT_CLASSES[name]) + 1} is newer than "
                    f"this reader's {known_version(EVENT_CLASSES[name])}: replay it after upgrading"
                    for _, name in result.inputs)
    assert sorted(d.error for d in result.dead) == wanted


TRAINER = next(s for s in SERVICES if s.name == "trainer")


async def test_the_trainer_trains_alike_on_v1_v2_and_newer_samples_and_leaves_a_newer_schema_out(workdir) -> None:
    """The samples topic is read by the trainer's snapshot reader (read_inputs), not by a consumer."""
    request = golden_path("TrainingRequested", 1).read_bytes()
    v1, v2 = golden_path("SampleCurated", 1).read_bytes(), golden_path("SampleCurated", 2).read_bytes()
    newer = json.dumps(newer_producer("SampleCurated")).encode()
    future = copy.deepcopy(golden("SampleCurated"))
    future.update(schema_version=known_version(EVENT_CLASSES["SampleCurated"]) + 1, sample_id="sample_future")
    runs = {name: await run(TRAINER, lambda _: request, workdir, samples)
            for name, samples in {"v1": [v1], "v2": [v2], "newer": [newer],
                                  "v2 and a newer schema": [v2, json.dumps(future).encode()]}.items()}

    (trained,) = runs["v1"].state
    assert [s["sample_id"] for s in trained] == [golden("SampleCurated")["sample_id"]]
    for name, result in runs.items():  # v1 is upcast: the v2 sample, score and all
        assert result.state == runs["v1"].state, name
        if name != "v2 and a newer schema":  # whose snapshot ends one record later
            assert result.events() == runs["v1"].events(), name
    assert MARK.encode() not in runs["newer"].wire()
    with pytest.raises(ValueError):
        parse_sample_record(json.dumps(future).encode())
