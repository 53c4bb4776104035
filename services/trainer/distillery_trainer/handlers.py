"""The trainer's use case: a training request in, a student trained on a samples snapshot out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from distillery.contracts.events import (
    CandidateGenerated,
    EvaluationCompleted,
    EventDeadLettered,
    LoopDecided,
    SampleCurated,
    StudentTrained,
    Trace,
    TrainingRequested,
    parse_sample_record,
)
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import CapabilitySpec
from distillery.domain.loop import stopped_units
from distillery.runtime.bus import Rejected
from distillery.runtime.kafka import Replayed, replay
from distillery.runtime.wiring import Context, DeadLetter, In, Out, Subscription
from distillery_trainer import metrics, rounds, training
from distillery_trainer.dataset import repository
from distillery_trainer.training import Inputs

# (topic, event model or parse function, partition -> end offset or None) -> the topic read to there
Read = Callable[[str, Any, dict[int, int] | None], Awaitable[Replayed]]


class TrainerSettings(ServiceSettings):
    artifact_dir: Path = Path(".distillery/artifacts")
    device: str = "cpu"
    round_check_s: float = 30.0  # how often the round scheduler looks at the topics (spec `rounds`)


@dataclass(kw_only=True)
class TrainerDeps(Context):
    settings: TrainerSettings = field(default_factory=TrainerSettings)
    read: Read | None = None  # None: replay from the settings' broker
    run: Callable[..., dict[str, Any]] = training.run  # one training run -> its lineage record

    def __post_init__(self) -> None:
        if self.read is None:
            self.read = partial(replay, self.settings)


LINEAGE_FIELDS = ("student_id", "student", "version", "artifact_dir", "base_model", "recipe", "manifest", "loss_curve",
                  "train_seconds", "train_cost_usd")


async def on_training_requested(items: list[In[TrainingRequested]], deps: TrainerDeps) -> list[Out | DeadLetter]:
    outs: list[Out | DeadLetter] = []
    for item in items:
        if await already_trained(item.event, deps):
            continue  # redelivered after its student was published (a crash before the commit)
        try:
            outs.append(Out(deps.topics.students, await train(item.event, deps)))
        except Rejected as exc:
            outs.append(DeadLetter(item.record, exc.reason, str(exc)))
        except ValueError as exc:  # e.g. no samples match the recipe yet
            outs.append(DeadLetter(item.record, "untrainable", str(exc)))
    return outs


async def train(request: TrainingRequested, deps: TrainerDeps) -> StudentTrained:
    name = request.student
    if name not in deps.spec.students:
        raise Rejected("unknown_student", f"unknown student '{name}' (spec has {sorted(deps.spec.students)})")
    inputs, retracted = await read_inputs(request, deps)
    lineage = await asyncio.to_thread(
        deps.run, name, without_units(deps.spec, name, request.exclude_units), inputs, deps.topics.samples,
        deps.settings.artifact_dir, deps.settings.device, progress_of(name), request.variant,
    )
    # Not part of the dataset's identity (the student id): the same live samples train the same student.
    lineage["manifest"]["retracted"] = retracted
    lineage["manifest"]["excluded_units"] = list(request.exclude_units)
    export_run(name, lineage)
    return StudentTrained(**{k: lineage[k] for k in LINEAGE_FIELDS}, variant=request.variant,
                          produced_by=deps.produced_by, trace=Trace(causation_id=request.event_id))


def without_units(spec: CapabilitySpec, name: str, excluded: list[str]) -> CapabilitySpec:
    """The spec whose recipe ``name`` trains without ``excluded`` (a round's stopped units); the
    recipe's units are part of the student's identity, so such a student has its own id."""
    if not excluded:
        return spec
    recipe = spec.students[name]
    kept = [u for u in recipe.units if u not in excluded]
    return spec.model_copy(update={"students": {**spec.students, name: recipe.model_copy(update={"units": kept})}})


async def already_trained(request: TrainingRequested, deps: TrainerDeps) -> bool:
    """Whether a student on the students topic names this request as its cause: a request is
    trained once, however often it is delivered or (a round) published."""
    trained = await deps.read(deps.topics.students, StudentTrained, None)
    return any(t.trace.causation_id == request.request_id for t in trained.events)


async def rounds_due(deps: TrainerDeps, now: datetime | None = None) -> list[Out]:
    """The next automatic round of every student whose policy says it is due (``rounds``): at most
    one per student, never while its previous round is in progress."""
    policies = {name: p for name, p in deps.spec.rounds.items() if not p.manual}
    if not policies:
        return []
    topics = deps.topics
    requests = (await deps.read(topics.training_requests, TrainingRequested, None)).events
    trained = (await deps.read(topics.students, StudentTrained, None)).events
    refused = {d.record_key for d in (await deps.read(topics.dlq, EventDeadLettered, None)).events
               if d.source_topic == topics.training_requests and d.record_key}
    samples = await deps.read(topics.samples, parse_sample_record, None)
    records = [(record.partition, record.offset, event) for record, event in samples.items]
    evaluations = (await deps.read(topics.evaluations, EvaluationCompleted, None)).events
    decisions = (await deps.read(topics.promotions, LoopDecided, None)).events
    curated = [event for event in samples.events if isinstance(event, SampleCurated)]
    outs = []
    for student, policy in policies.items():
        state = rounds.round_state(student, requests, trained, refused, topics.samples)
        stopped = stopped_units(student, evaluations, decisions, curated)
        units = [u for u in deps.spec.students[student].units if u not in stopped]
        fresh = rounds.new_samples(records, units, state.since)
        why = rounds.due(policy, state, fresh, now or datetime.now(timezone.utc))
        metrics.ROUND.labels(student).set(state.last)
        export_stops(student, deps.spec.students[student].units, stopped)
        if why:
            request = rounds.round_request(student, state.last + 1, why, deps.produced_by, sorted(stopped))
            outs.append(Out(topics.training_requests, request))
    return outs


def export_stops(student: str, units: list[str], stopped: dict) -> None:
    for unit in units:
        metrics.STOPPED.labels(student, unit).set(float(unit in stopped))


def progress_of(name: str):
    def progress(step: int, total: int, loss: float) -> None:
        metrics.STEP.labels(name).set(step)
        metrics.TOTAL.labels(name).set(total)
        metrics.LOSS.labels(name).set(loss)

    return progress


def export_run(name: str, lineage: dict) -> None:
    metrics.RUNS.labels(name).inc()
    metrics.SAMPLES.labels(name).set(lineage["manifest"]["samples"])
    metrics.THROUGHPUT.labels(name).set(lineage["tokens"] / max(lineage["train_seconds"], 1e-9))
    metrics.KD_EXAMPLES.labels(name).set(lineage["manifest"].get("kd_examples", 0))


async def read_inputs(request: TrainingRequested, deps: TrainerDeps) -> tuple[Inputs, int]:
    """The samples (and candidates, which raw buckets and logit distillation need) at the
    request's snapshot, or at the topics' current ends."""
    topics = deps.topics
    # the editor's records; anything else on the topic is skipped
    snapshot = await deps.read(topics.samples, parse_sample_record, snapshot_ends(request, topics.samples))
    count_unreadable(topics.samples, snapshot)
    samples, retracted = repository(snapshot.events)
    offsets = {topics.samples: snapshot.end_offsets}
    candidates: list[CandidateGenerated] = []
    if needs_candidates(request, deps):
        replayed = await deps.read(topics.candidates, CandidateGenerated, snapshot_ends(request, topics.candidates))
        count_unreadable(topics.candidates, replayed)
        candidates, offsets[topics.candidates] = replayed.events, replayed.end_offsets
    return Inputs(samples, candidates, offsets), retracted


def count_unreadable(topic: str, replayed: Replayed) -> None:
    """Records that are not events of the topic never train; replay logs them, the metric counts them."""
    if replayed.skipped:
        metrics.UNREADABLE.labels(topic).inc(replayed.skipped)


def snapshot_ends(request: TrainingRequested, topic: str) -> dict[int, int] | None:
    """Partition -> end offset the request pins ``topic`` at (None: read to the topic's current end)."""
    ends = request.snapshot.get(topic)
    return {int(p): o for p, o in ends.items()} if ends is not None else None


def needs_candidates(request: TrainingRequested, deps: TrainerDeps) -> bool:
    """Logit distillation reads the teacher's cached tokens; raw buckets read every teacher answer."""
    recipe = deps.spec.students[request.student]
    return recipe.distill is not None or bool(request.variant and request.variant.bucket.endswith("_teacher"))


def one_request_at_a_time(deps: TrainerDeps) -> dict[str, int]:
    """A run takes minutes to hours: one request per batch, and the broker waits that long for the next poll."""
    return {"max_records": 1, "max_poll_interval_ms": 3_600_000}


SUBSCRIPTIONS = [
    Subscription("training.requests", TrainingRequested, on_training_requested, batch=True,
                 options=one_request_at_a_time),
]
