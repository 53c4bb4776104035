"""The channel table: every topic, its events, who produces it and who consumes it, with which
consumer group and how many partitions (docs/architecture.md §2).

Everything that names a topic or a consumer group derives from this table: the services'
subscriptions, the AsyncAPI document, the CLI's lag and status views, the Kubernetes base and
compose's topic job. ``tests/unit/test_channels.py`` fails when any of them disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillery.contracts import events
from distillery.contracts.events import Event

# Every topic name is ``<prefix>.<stem>.v1``; the prefix defaults to ``distill`` (tests use their own).
TEACHER_STEM = "generation.requests.{teacher_id}"

# A service's consumer group; DISTILLERY_CONSUMER_GROUP replaces it. A service's other subscriptions
# add a suffix to it. The judge's group names its version, so a new version replays from the start.
SERVICE_GROUPS = {
    "router": "distillery-router",
    "teacher": "distillery-teacher-{teacher_id}",
    "judge": "distillery-judge-{judge_version}",
    "editor": "distillery-editor",
    "trainer": "distillery-trainer",
    "evaluator": "distillery-evaluator",
}


@dataclass(frozen=True)
class Consumer:
    """A service reading a topic in a consumer group: ``SERVICE_GROUPS[service]`` plus ``suffix``."""

    service: str
    suffix: str = ""
    purpose: str = ""
    scales_on: bool = False  # the subscription KEDA scales the service by (its main input)
    optional: bool = False  # subscribed only when the spec uses it (routing strategies, retries)
    # every replica reads every partition from the start, without a group and without commits:
    # state each replica must see whole (docs/architecture.md §11)
    broadcast: bool = False
    # read by the same consumer as this other channel (same group, range-assigned): both are keyed
    # by the same key and have as many partitions, so one key's records of both reach one replica
    together_with: str = ""


@dataclass(frozen=True)
class Channel:
    stem: str
    events: tuple[type[Event], ...]
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[Consumer, ...] = ()
    readers: tuple[str, ...] = ()  # who reads the whole topic at start or on demand, without a group
    # payloads the consumers accept besides the events (the tasks topic's bare task objects)
    also_accepts: tuple[type, ...] = ()

    def topic(self, prefix: str = "distill", teacher_id: str | None = None) -> str:
        stem = self.stem.format(teacher_id=teacher_id) if teacher_id is not None else self.stem
        return f"{prefix}.{stem}.v1"


# Partition counts: judge and editor inputs get at least 4 so they can scale out. Events about one
# task are keyed by task_id, so one partition holds all of it; verdicts and review decisions are
# keyed by unit instead, because the editor's dedup and quotas are per unit (docs/architecture.md §11).
CHANNELS: tuple[Channel, ...] = (
    Channel("tasks", (events.TaskSubmitted,), 4,
            producers=("upstream producers", "distillery submit", "router (gRPC ingest)"),
            consumers=(Consumer("router", purpose="route each task to its teachers", scales_on=True),),
            readers=("evaluator (held-out tasks)",),
            also_accepts=(events.Task,)),  # a bare task (the JSONL line), wrapped by the router
    Channel(TEACHER_STEM, (events.GenerationRequested,), 4,
            producers=("router",),
            consumers=(Consumer("teacher", purpose="answer requests for this teacher", scales_on=True),)),
    Channel("candidates", (events.CandidateGenerated,), 4,
            producers=("teacher",),
            consumers=(Consumer("judge", purpose="aggregate per task, judge, pool", scales_on=True),
                       Consumer("router", "-chain", "move a role chain to its next step", optional=True)),
            readers=("trainer (raw buckets, logit distillation)", "evaluator (held-out teacher answers)")),
    Channel("verdicts", (events.CandidatesJudged,), 4,
            producers=("judge",),
            consumers=(Consumer("editor", purpose="map, compress, dedup, admit samples (per unit)", scales_on=True),
                       Consumer("router", "-feedback", "learn acceptance and cost per teacher (value routing)",
                                optional=True, broadcast=True),
                       Consumer("judge", "-peers", "every replica's verdicts: tasks judged, self-check windows",
                                broadcast=True),
                       Consumer("evaluator", "-shadow", "live judged quality of promoted students (shadow answers)",
                                optional=True)),
            readers=("judge (what it already judged)", "router (rebuilds its value table)",
                     "evaluator (offline cost)", "distillery status, replay")),
    Channel("regeneration", (events.RegenerationRequested,), 4,
            producers=("judge",),
            consumers=(Consumer("router", "-regeneration", "ask the same teachers again, with the judge's reasons",
                                optional=True),)),
    Channel("samples", (events.SampleCurated, events.SampleRetracted), 4,
            producers=("editor", "distillery samples import"),
            readers=("trainer (dataset snapshot)", "editor (rebuilds its state)", "distillery samples")),
    Channel("reviews", (events.ReviewDecided,), 4,
            producers=("distillery review decide",),
            consumers=(Consumer("editor", purpose="apply human decisions on the review pool",
                                together_with="verdicts"),),
            readers=("editor (rebuilds its state)", "evaluator (review cost)")),
    Channel("training.requests", (events.TrainingRequested,), 1,
            producers=("distillery train", "distillery attribute", "distillery experiment", "trainer (rounds)"),
            consumers=(Consumer("trainer", purpose="train a student on a samples snapshot", scales_on=True),),
            readers=("trainer (round scheduler)",)),
    Channel("students", (events.StudentTrained,), 1,
            producers=("trainer",),
            consumers=(Consumer("evaluator", purpose="evaluate each trained student", scales_on=True),),
            readers=("distillery students", "trainer (a request is trained once; round scheduler)")),
    Channel("evaluations", (events.EvaluationCompleted,), 1,
            producers=("evaluator",),
            readers=("evaluator (rounds, attribution)", "distillery report, attribute, students")),
    Channel("promotions", (events.LoopDecided,), 1,
            producers=("evaluator (promote, demote)", "distillery resume"),
            consumers=(Consumer("router", "-promotions", "which units send a share of live tasks to a student",
                                optional=True, broadcast=True),
                       Consumer("teacher", "-promotions", "the artifact a student deployment serves",
                                optional=True, broadcast=True)),
            readers=("trainer (resumed units)", "evaluator (who is promoted)", "distillery students, status")),
    Channel("dlq", (events.EventDeadLettered,), 1,
            producers=("every service",),
            readers=("operators", "distillery status")),
)
BY_STEM = {channel.stem: channel for channel in CHANNELS}
PARTITIONS = {channel.stem.removesuffix(".{teacher_id}"): channel.partitions for channel in CHANNELS}


def channel(stem: str) -> Channel:
    return BY_STEM[stem]


def group_name(service: str, suffix: str = "", override: str = "", **params: str) -> str:
    """The consumer group of one subscription: the service's group (or the operator's override) plus the suffix."""
    return (override or SERVICE_GROUPS[service].format(**params)) + suffix


def consumers_of(service: str) -> list[tuple[Channel, Consumer]]:
    """The subscriptions the table gives a service, in table order."""
    return [(ch, c) for ch in CHANNELS for c in ch.consumers if c.service == service]


def main_input(service: str) -> tuple[Channel, Consumer]:
    """The subscription a service scales on (KEDA's trigger, the CLI's lag column)."""
    return next((ch, c) for ch, c in consumers_of(service) if c.scales_on)


class _Topic:
    """A topic name under the instance's prefix: ``Topics("t").verdicts == "t.verdicts.v1"``."""

    def __init__(self, stem: str) -> None:
        self.stem = stem

    def __get__(self, topics: Topics | None, owner: type) -> str:
        return channel(self.stem).topic(topics.prefix) if topics is not None else self.stem


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (default ``distill``; tests use their own)."""

    prefix: str = "distill"

    tasks = _Topic("tasks")
    candidates = _Topic("candidates")
    verdicts = _Topic("verdicts")
    regeneration = _Topic("regeneration")
    samples = _Topic("samples")
    reviews = _Topic("reviews")  # human decisions on the review pool (keyed by unit)
    training_requests = _Topic("training.requests")
    students = _Topic("students")
    evaluations = _Topic("evaluations")
    promotions = _Topic("promotions")  # the closed loop's decisions: promote, demote, resume
    dlq = _Topic("dlq")

    def of(self, stem: str, teacher_id: str | None = None) -> str:
        return channel(stem).topic(self.prefix, teacher_id)

    def generation_requests(self, teacher_id: str) -> str:
        return self.of(TEACHER_STEM, teacher_id)

    def all_topics(self, teacher_ids: list[str]) -> dict[str, int]:
        """Every topic of a deployment with its partition count."""
        topics: dict[str, int] = {}
        for ch in CHANNELS:
            if ch.stem == TEACHER_STEM:
                topics.update({ch.topic(self.prefix, t): ch.partitions for t in teacher_ids})
            else:
                topics[ch.topic(self.prefix)] = ch.partitions
        return topics
