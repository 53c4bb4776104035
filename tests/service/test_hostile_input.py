"""Hostile input (issue 14): every topic a service consumes gets a corpus of bad records of its own.

Each corpus entry is a named mutation of a valid event of the topic (its golden wire file): not
JSON, wrong types, missing fields, a newer schema version, an unknown unit, oversized, invalid
UTF-8, deep nesting, huge numbers, null bytes, path-like, empty and overlong ids. The consumers come
from the channel table. Every service runs once, as a process, on its own topic prefix on the one
test broker; its corpora go to its topics, then one valid event per topic. Then: each bad record
has exactly one dead letter, at its own offset, naming the expected reason; the process is up;
every record that was not dead-lettered was consumed; and the valid events' outputs are there.

Run alone: ``pytest tests/service/test_hostile_input.py`` (the ``broker`` tier).
"""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from distillery.contracts import ids
from distillery.contracts.channels import CHANNELS, TEACHER_STEM, Topics
from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    EvaluationCompleted,
    EventDeadLettered,
    GenerationRequested,
    SampleCurated,
    StudentTrained,
    known_version,
)
from distillery.contracts.settings import ServiceSettings
from distillery.runtime.kafka import client_kwargs, ensure_topics, replay, topic_counts
from distillery_cli import stack
from tests.support import ROOT
from tests.unit.test_contracts import EVENT_CLASSES, golden
from tests.waiting import wait_for

TEACHER = "qwen-coder"  # the teacher of the golden requests; the service test runs this one
MAX_TASK_BYTES = 24 * 1024  # the router's bound on a task (plus 4 KiB of envelope): deep nesting fits under it
MAX_EVENT_BYTES = 32 * 1024  # every other consumer's bound on a record; `oversized` is over both
# Optional consumers of the channel table that this test's spec turns on (a unit allows retries).
ENABLED_OPTIONAL = {("router", "regeneration")}


# --- the corpus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Where a channel's event keeps what the mutations hit: the ids its consumers key state (and
    sometimes files) by, an integer field, a float field if it has one, and its capability unit."""

    ids: tuple[str, ...]
    integer: str
    real: str | None = None
    unit: str | None = None


SHAPES = {
    "tasks": Shape(("task_id", "task.task_id"), "schema_version", unit="task.unit"),
    "regeneration": Shape(("regeneration_id", "verdict_id", "task.task_id"), "attempt", unit="task.unit"),
    TEACHER_STEM: Shape(("request_id", "task.task_id"), "max_new_tokens", "route_score", "task.unit"),
    "candidates": Shape(("candidate_id", "request_id", "task.task_id"), "expected_candidates", "cost_usd", "task.unit"),
    "verdicts": Shape(("verdict_id", "task.task_id", "candidates.0.candidate_id"), "attempt", "candidates.0.score",
                      "task.unit"),
    "reviews": Shape(("decision_id", "verdict_id", "task.task_id", "candidate.candidate_id"), "candidate.rank",
                     "candidate.score", "task.unit"),
    "training.requests": Shape(("request_id",), "snapshot.topic.0"),
    "students": Shape(("student_id",), "schema_version", "train_cost_usd"),
}
# A unit (or student) the deployment does not have, per consumer: (field, value, reason). Absent
# where it is not an error: the evaluator leaves other deployments' students alone, and the judge's
# verdict follower counts only its own version's verdicts.
UNKNOWN = {
    ("router", "tasks"): ("task.unit", "astrology", "unknown_unit"),
    ("router", "regeneration"): ("task.unit", "astrology", "unknown_unit"),
    ("teacher", TEACHER_STEM): ("task.unit", "astrology", "unknown_unit"),
    ("judge", "candidates"): ("task.unit", "astrology", "unknown_unit"),
    ("editor", "verdicts"): ("task.unit", "astrology", "unknown_unit"),
    ("editor", "reviews"): ("task.unit", "astrology", "unknown_unit"),
    ("trainer", "training.requests"): ("student", "astrologer", "unknown_student"),
}
DECODING = {"invalid", "newer_schema", "oversized"}  # the reasons of the runtime's validation (Bus.decode)
RAW = "@@raw@@"  # a placeholder replaced by bytes json.dumps cannot write (1e400, NaN, invalid UTF-8...)


@dataclass(frozen=True)
class Bad:
    name: str
    payload: bytes
    reason: str  # the dead letter's reason: the error up to its first ':'


def put(data: dict, path: str, value: Any) -> dict:
    """A deep copy of ``data`` with ``path`` (dotted; digits index lists) set, dicts made on the way."""
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node.get(part), dict | list):
            node[part] = {}
        node = node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def ids_to(data: dict, shape: Shape, value: Any) -> dict:
    for path in shape.ids:
        data = put(data, path, value)
    return data


def wire(data: dict, raw: bytes | None = None) -> bytes:
    payload = json.dumps(data).encode()
    return payload if raw is None else payload.replace(json.dumps(RAW).encode(), raw)


def corpus(service: str, stem: str, event: dict, name: str) -> list[Bad]:
    """The bad records of one consumer: mutations of ``event`` (a valid ``name`` event of the topic)."""
    shape = SHAPES[stem]
    known = known_version(EVENT_CLASSES[name])
    first = shape.ids[0]
    bad = [
        Bad("not_json", b"{this is not json", "invalid"),
        Bad("not_an_object", b"[1, 2, 3]", "invalid"),
        Bad("empty_record", b"", "invalid"),
        Bad("wrong_type", wire(put(event, first, 12345)), "invalid"),
        Bad("missing_field", wire({k: v for k, v in event.items() if k != first}), "invalid"),
        Bad("newer_schema", wire(put(event, "schema_version", known + 1)), "newer_schema"),
        Bad("oversized", wire({**event, "padding": "x" * MAX_EVENT_BYTES}), "oversized"),
        Bad("invalid_utf8", wire(put(event, first, RAW), b'"\xff\xfe\xfd"'), "invalid"),
        Bad("deep_nesting", wire({**event, "nested": RAW}, b"[" * 10_000 + b"]" * 10_000), "invalid"),
        Bad("huge_int", wire(put(event, shape.integer, RAW), b"1" + b"0" * 5000), "invalid"),
        Bad("huge_float", wire(put(event, shape.real or shape.integer, RAW), b"1e400"), "invalid"),
        Bad("null_byte", wire(ids_to(event, shape, "task\x00x")), "invalid"),
        Bad("raw_null_byte", wire(put(event, first, RAW), b'"task\x00x"'), "invalid"),
        Bad("path_relative_id", wire(ids_to(event, shape, "../../etc/passwd")), "invalid"),
        Bad("path_absolute_id", wire(ids_to(event, shape, "/tmp/x")), "invalid"),
        Bad("path_windows_id", wire(ids_to(event, shape, "C:\\Windows\\x")), "invalid"),
        Bad("empty_id", wire(ids_to(event, shape, "")), "invalid"),
        Bad("overlong_id", wire(ids_to(event, shape, "a" * 1000)), "invalid"),
    ]
    if shape.real is not None:
        bad.append(Bad("not_a_number", wire(put(event, shape.real, RAW), b"NaN"), "invalid"))
    if (service, stem) in UNKNOWN:
        path, value, reason = UNKNOWN[(service, stem)]
        bad.append(Bad("unknown_unit", wire(put(event, path, value)), reason))
    return bad + EXTRA.get(stem, lambda e: [])(event)


def bare_tasks(event: dict) -> list[Bad]:
    """The tasks topic also takes a bare task object (the JSONL line of `distillery submit`)."""
    task = {"unit": "tool_call", "prompt": "Get the news"}
    return [
        Bad("bare_scalar", b"42", "invalid"),
        Bad("bare_null", b"null", "invalid"),
        Bad("bare_unknown_unit", wire({**task, "unit": "astrology"}), "invalid"),
        Bad("bare_missing_prompt", wire({"unit": "tool_call"}), "invalid"),
        Bad("bare_wrong_type", wire({**task, "prompt": ["not", "text"]}), "invalid"),
        Bad("bare_path_like_id", wire({**task, "task_id": "../../etc/passwd"}), "invalid"),
        Bad("bare_empty_id", wire({**task, "task_id": ""}), "invalid"),
        Bad("bare_over_task_limit", wire({**task, "prompt": "x" * MAX_TASK_BYTES}), "invalid"),
    ]


def variant_paths(event: dict) -> list[Bad]:
    """A variant's experiment id names the evaluator's attribution folder."""
    variant = {"name": "full", "bucket": "curated", "experiment_id": "../../../tmp/escape", "members": 2}
    return [Bad("path_like_experiment_id", wire({**event, "variant": variant}), "invalid")]


def artifact_paths(event: dict) -> list[Bad]:
    """The evaluator writes its report under the student's artifact_dir."""
    return [
        *variant_paths(event),
        Bad("artifact_dir_traversal", wire({**event, "artifact_dir": "/tmp/../../etc/escape"}), "invalid"),
        Bad("artifact_dir_null_byte", wire({**event, "artifact_dir": "/tmp/x\x00y"}), "invalid"),
        Bad("artifact_dir_empty", wire({**event, "artifact_dir": ""}), "invalid"),
    ]


EXTRA: dict[str, Callable[[dict], list[Bad]]] = {"tasks": bare_tasks, "training.requests": variant_paths,
                                                  "students": artifact_paths}


# --- the valid events, each after its topic's corpus -------------------------------------------------


def fresh(name: str, tag: str, **fields: Any) -> dict:
    """The golden ``name`` event with new ids (and a new prompt): nothing in a corpus duplicates it."""
    data = golden(name)
    task_id = ids.content_id("task", "hostile", tag)
    if "task" in data:
        data["task"] = {**data["task"], "task_id": task_id, "prompt": f"{data['task']['prompt']} ({tag})"}
        data["trace"] = {**data["trace"], "task_id": task_id}
    for i, candidate in enumerate(data.get("candidates", [])):
        candidate["candidate_id"] = ids.content_id("cand", "hostile", tag, i)
    if "candidate" in data:
        data["candidate"]["candidate_id"] = ids.content_id("cand", "hostile", tag)
    cls = EVENT_CLASSES[name]
    data[cls.id_field] = data["event_id"] = ids.content_id(cls.id_field.removesuffix("_id"), "hostile", tag)
    return {**data, **fields}


@dataclass
class Valid:
    """The valid events of one consumer and how to find what each became."""

    events: list[bytes]
    outputs: Callable[[dict[str, list]], bool] | None = None  # topic -> events there: True once all are out
    output_topics: tuple[tuple[str, type], ...] = ()  # (topic, model) that ``outputs`` reads


def valid_for(service: str, stem: str, topics: Topics, tmp_path: Path) -> Valid:
    if (service, stem) == ("router", "tasks"):
        envelope = fresh("TaskSubmitted", "router-task")
        envelope = {**envelope, "task_id": envelope["task"]["task_id"], "event_id": envelope["task"]["task_id"]}
        bare = {"unit": "tool_call", "prompt": "Get 3 latest news on Ether (bare)", "tools": envelope["task"]["tools"]}
        wanted = {envelope["task_id"], ids.task_id_for("tool_call", bare["prompt"], envelope["task"]["tools"])}
        outs = tuple((topics.generation_requests(t), GenerationRequested) for t in ("smollm2", TEACHER))
        return Valid([wire(envelope), wire(bare)],
                     lambda got: wanted <= {r.task.task_id for topic, _ in outs for r in got[topic]}, outs)
    if (service, stem) == ("router", "regeneration"):
        event = fresh("RegenerationRequested", "router-regeneration")
        topic = topics.generation_requests(TEACHER)
        return Valid([wire(event)], lambda got: any(r.task.task_id == event["task"]["task_id"] and r.attempt == 2
                                                    for r in got[topic]), ((topic, GenerationRequested),))
    if service == "teacher":
        event = fresh("GenerationRequested", "teacher")
        candidate_id = ids.candidate_id_for(event["request_id"])
        return Valid([wire(event)], lambda got: any(c.candidate_id == candidate_id and c.error is None
                                                    for c in got[topics.candidates]),
                     ((topics.candidates, CandidateGenerated),))
    if service == "judge" and stem == "candidates":
        event = fresh("CandidateGenerated", "judge", expected_candidates=1, strategy="single")
        return Valid([wire(event)], lambda got: any(v.task.task_id == event["task"]["task_id"]
                                                    for v in got[topics.verdicts]),
                     ((topics.verdicts, CandidatesJudged),))
    if service == "editor" and stem in ("verdicts", "reviews"):
        event = fresh("CandidatesJudged" if stem == "verdicts" else "ReviewDecided", f"editor-{stem}")
        return Valid([wire(event)], lambda got: any(s.provenance.task_id == event["task"]["task_id"]
                                                    for s in got[topics.samples]),
                     ((topics.samples, SampleCurated),))
    if service == "trainer":
        event = fresh("TrainingRequested", "trainer")
        return Valid([wire(event)], lambda got: any(s.trace.causation_id == event["event_id"]
                                                    for s in got[topics.students]),
                     ((topics.students, StudentTrained),))
    if service == "evaluator":
        event = fresh("StudentTrained", "evaluator")
        event["artifact_dir"] = str(tmp_path / "artifacts" / "tiny" / event["student_id"])
        return Valid([wire(event)], lambda got: any(e.student_id == event["student_id"]
                                                    for e in got[topics.evaluations]),
                     ((topics.evaluations, EvaluationCompleted),))
    # a consumer without outputs of its own (the judge following verdicts): consumed is processed
    name = next(ch.events[0].__name__ for ch in CHANNELS if ch.stem == stem)
    return Valid([wire(fresh(name, f"{service}-{stem}"))])


def training_samples() -> list[bytes]:
    """What the trainer's valid request trains on: golden samples with their own ids and content."""
    out = []
    for i in range(3):
        data = fresh("SampleCurated", f"sample-{i}")
        data["prompt"] = f"Get {i + 2} latest news on Bitcoin in US"
        data["content_hash"] = ids.normalized_hash(data["prompt"])
        out.append(wire(data))
    return out


# --- the deployment --------------------------------------------------------------------------------


def hostile_spec(tmp_path: Path) -> Path:
    """The example spec on replay teachers (a recording of the teacher's valid request), with retries
    (the router reads the regeneration topic), no MiniLM in the editor and a shrunken tiny student."""
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    request = fresh("GenerationRequested", "teacher")
    row = {"teacher_id": TEACHER, "task_id": request["task"]["task_id"], "latency_s": 0.01, "confidence": 0.9,
           "text": json.dumps({"name": "get_news", "arguments": {"topic": "Bitcoin", "quantity": 5}}),
           "prompt_tokens": 50, "completion_tokens": 20}
    (tmp_path / "replay.jsonl").write_text(json.dumps(row) + "\n")
    price = {"per_1k_prompt": 0.003, "per_1k_completion": 0.015}
    spec["teachers"] = {t: {"backend": "replay", "replay_path": str(tmp_path / "replay.jsonl"), "price": price}
                        for t in spec["teachers"]}
    spec["units"]["tool_call"]["max_attempts"] = 2
    for unit in spec["units"].values():
        unit.pop("editor", None)
    spec["students"] = {"tiny": {**spec["students"]["tiny"], "units": ["tool_call"], "epochs": 1, "max_steps": 2,
                                 "hidden_size": 32, "layers": 1, "max_new_tokens": 8, "max_seq_len": 256}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def consumers() -> list[tuple[str, str]]:
    """(service, stem) of every subscription the channel table gives the services under this spec."""
    return [(c.service, ch.stem) for ch in CHANNELS for c in ch.consumers
            if not c.optional or (c.service, ch.stem) in ENABLED_OPTIONAL]


@dataclass
class Produced:
    topic: str
    partition: int
    offset: int
    bad: Bad | None  # None: a valid record


async def produce(settings: ServiceSettings, items: list[tuple[str, bytes, Bad | None]]) -> list[Produced]:
    """Every record to partition 0, in order, so a valid event lands after its corpus."""
    producer = AIOKafkaProducer(acks="all", **client_kwargs(settings))
    await producer.start()
    try:
        futures = [(await producer.send(topic, value, key=(bad.name if bad else "valid").encode(), partition=0), bad)
                   for topic, value, bad in items]
        return [Produced(meta.topic, meta.partition, meta.offset, bad)
                for meta, bad in [(await future, bad) for future, bad in futures]]
    finally:
        await producer.stop()


def consumed(port: int, service: str, what: str = "consumed") -> dict[str, float]:
    """The service's count of valid records consumed (or of events published), per topic (its
    Prometheus metric)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        families = text_string_to_metric_families(resp.read().decode())
        return {s.labels["topic"]: s.value for f in families for s in f.samples
                if s.name == f"distillery_{service}_events_{what}_total"}


async def read_all(reads: dict[tuple[str, str], tuple[ServiceSettings, str, type]]) -> dict[tuple[str, str], list]:
    results = await asyncio.gather(*(replay(settings, topic, model) for settings, topic, model in reads.values()))
    return {key: result.events for key, result in zip(reads, results, strict=True)}


def test_every_consumer_dead_letters_its_hostile_corpus_stays_up_and_goes_on(tmp_path, kafka_bootstrap, topic_prefix):
    spec_path = hostile_spec(tmp_path)
    pairs = consumers()
    services = sorted({service for service, _ in pairs})
    settings = {s: ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                                   "topic_prefix": f"{topic_prefix}-{s}"}) for s in services}

    async def create_topics() -> None:
        await asyncio.gather(*(ensure_topics(settings[s], settings[s].topics.all_topics(["smollm2", TEACHER]))
                               for s in services))

    asyncio.run(create_topics())
    processes = {}
    for service in services:
        run_dir = tmp_path / service
        env = stack.service_env(kafka_bootstrap, settings[service].topic_prefix, spec_path, run_dir,
                                {"DISTILLERY_MAX_TASK_BYTES": str(MAX_TASK_BYTES),
                                 "DISTILLERY_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES), "DISTILLERY_TORCH_THREADS": "1",
                                 **({"DISTILLERY_TEACHER_ID": TEACHER} if service == "teacher" else {})})
        processes[service] = stack.start_process(service, f"distillery_{service}", env, run_dir)
    try:
        wait_for(lambda: {s: stack.ready(p) or not stack.pid_alive(p.pid) for s, p in processes.items()},
                 lambda ready: all(ready.values()), timeout_s=120)
        for service, info in processes.items():
            assert stack.pid_alive(info.pid), f"{service} did not start: {stack.last_line(info.log)}"

        # the corpora, each topic's valid events after them (the trainer's samples first)
        items: dict[str, list[tuple[str, bytes, Bad | None]]] = {s: [] for s in services}
        valid: dict[tuple[str, str], Valid] = {}
        for service, stem in pairs:
            topics = settings[service].topics
            topic = topics.of(stem, teacher_id=TEACHER)
            name = next(ch.events[0].__name__ for ch in CHANNELS if ch.stem == stem)
            valid[(service, stem)] = valid_for(service, stem, topics, tmp_path / service)
            base = golden(name)
            if "artifact_dir" in base:  # where the evaluator would write, were a bad one accepted
                base["artifact_dir"] = str(tmp_path / service / "corpus-artifacts")
            items[service] += [(topic, bad.payload, bad) for bad in corpus(service, stem, base, name)]
            items[service] += [(topic, payload, None) for payload in valid[(service, stem)].events]
        if "trainer" in items:
            items["trainer"][:0] = [(settings["trainer"].topics.samples, s, None) for s in training_samples()]

        async def produce_everything() -> dict[str, list[Produced]]:
            done = await asyncio.gather(*(produce(settings[s], items[s]) for s in services))
            return dict(zip(services, done, strict=True))

        produced = asyncio.run(produce_everything())
        bad = {s: [p for p in produced[s] if p.bad is not None] for s in services}

        reads = {(s, "dlq"): (settings[s], settings[s].topics.dlq, EventDeadLettered) for s in services}
        for (service, _), v in valid.items():
            reads.update({(service, topic): (settings[service], topic, model) for topic, model in v.output_topics})

        seen: dict[tuple[str, str], list] = {}

        def pending() -> list[str]:
            """What is not there yet: each bad record's dead letter, each consumer's valid outputs."""
            seen.update(asyncio.run(read_all(reads)))
            missing = []
            for s in services:
                lettered = {(d.source_topic, d.partition, d.offset) for d in seen[(s, "dlq")]}
                missing += [f"{s}: {p.topic} {p.bad.name}" for p in bad[s] if (p.topic, p.partition, p.offset)
                            not in lettered]
            return missing + [f"{s}: the output of the valid {stem}" for (s, stem), v in valid.items()
                              if v.outputs is not None and not v.outputs({t: seen[(s, t)] for t, _ in v.output_topics})]

        wait_for(pending, lambda missing: not missing, timeout_s=120, every_s=1)
        got = seen

        summary = []
        for service in services:
            assert stack.pid_alive(processes[service].pid), f"{service} died: {stack.last_line(processes[service].log)}"
            letters = Counter((d.source_topic, d.partition, d.offset) for d in got[(service, "dlq")])
            by_offset = {(d.source_topic, d.partition, d.offset): d for d in got[(service, "dlq")]}
            for p in bad[service]:
                where = (p.topic, p.partition, p.offset)
                assert letters[where] == 1, f"{service} {p.topic} {p.bad.name}: {letters[where]} dead letters"
                letter = by_offset[where]
                assert letter.service == service and letter.error.split(":")[0] == p.bad.reason, \
                    f"{service} {p.topic} {p.bad.name}: {letter.error[:200]}"
            assert sum(letters.values()) == len(bad[service]), f"{service}: dead letters for valid records"
            # every other record of a consumed topic passed validation (the handler's rejections did too)
            topics = sorted({p.topic for p in bad[service]})
            ends = asyncio.run(topic_counts(settings[service], topics))
            counts = consumed(processes[service].port, service)
            # the judge's peers follower passes over the judge's own verdicts without decoding them
            own = consumed(processes[service].port, service, "published") if service == "judge" else {}
            for topic in topics:
                corpus_size = sum(p.topic == topic for p in bad[service])
                undecodable = sum(p.topic == topic and p.bad.reason in DECODING for p in bad[service])
                assert counts.get(topic, 0) + own.get(topic, 0) == ends[topic] - undecodable, \
                    (service, topic, counts, own, ends)
                reasons = Counter(p.bad.reason for p in bad[service] if p.topic == topic)
                names = " ".join(p.bad.name for p in bad[service] if p.topic == topic)
                summary.append(f"{service:9} {topic.removeprefix(settings[service].topic_prefix + '.'):34} "
                               f"{corpus_size:3} bad, one dead letter each: {dict(reasons)}; passed validation: "
                               f"{int(counts.get(topic, 0))} (valid + rejected by the handler)\n    {names}")
        print("\nhostile corpus per consumed topic:\n" + "\n".join(summary))
    finally:
        for info in processes.values():
            stack.stop_process(info.pid, timeout_s=10)
