"""The router's use cases, one handler per event: route tasks, move chains on, ask again, learn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    LoopDecided,
    RegenerationRequested,
    TaskSubmitted,
)
from distillery.contracts.submission import parse_task_record
from distillery.domain.loop import serving
from distillery.runtime.counting import child
from distillery.runtime.wiring import Context, Out, Subscription, after_rebuild
from distillery_router import metrics
from distillery_router.feedback import ValueTable
from distillery_router.ingest import RouterSettings, TaskIndex
from distillery_router.logic import next_chain_step, regenerate, route, shadow_requests

# The size bound is on the task (as submit and ingest measure it); the event envelope around it
# (ids, producer, time, trace) adds a few hundred bytes that must not tip a task over the limit.
ENVELOPE_BYTES = 4096


@dataclass(kw_only=True)
class RouterDeps(Context):
    settings: RouterSettings = field(default_factory=RouterSettings)
    table: ValueTable = field(default_factory=ValueTable)  # value routing: acceptance and cost per teacher
    index: TaskIndex = field(default_factory=TaskIndex)  # what the gRPC ingest reports as a task's status
    # where the start-up rebuild of the value table stopped (partition -> end offset): every replica
    # follows the verdicts topic from there (the "-feedback" broadcast consumer)
    rebuilt_to: dict[int, int] = field(default_factory=dict)
    # the closed loop's decisions, followed from the start (the "-promotions" broadcast consumer)
    decisions: dict[str, LoopDecided] = field(default_factory=dict)
    # (student, unit) -> the promotion in force, derived from ``decisions`` when one arrives, not per task
    promoted: dict[tuple[str, str], LoopDecided] = field(default_factory=dict)


def uses_strategy(strategy: str):
    def enabled(deps: RouterDeps) -> bool:
        return any(unit.routing.strategy == strategy for unit in deps.spec.units.values())

    return enabled


def retries_enabled(deps: RouterDeps) -> bool:
    return any(unit.max_attempts > 1 for unit in deps.spec.units.values())


def on_task_submitted(event: TaskSubmitted, deps: RouterDeps) -> list[Out]:
    requests = route(event, deps.spec, deps.produced_by, deps.table)
    deps.index.routed(event.task_id, [r.teacher_id for r in requests], unit=event.task.unit)
    if deps.promoted:
        requests += shadow_requests(event, deps.spec, deps.promoted, deps.produced_by)
    for request in requests:
        child(metrics.ROUTED, request.task.unit, request.teacher_id, request.strategy).inc()
    return [Out(deps.topics.generation_requests(r.teacher_id), r) for r in requests]


def on_loop_decided(event: LoopDecided, deps: RouterDeps) -> list[Out]:
    """Promotions and demotions, in topic order: which units also send live tasks to a student.
    Every replica reads the whole topic from the start, so each knows the same state."""
    deps.decisions.setdefault(event.decision_id, event)  # a redelivered decision changes nothing
    deps.promoted = serving(list(deps.decisions.values()))
    for d in deps.decisions.values():
        metrics.SHADOWING.labels(d.student, d.unit).set(float((d.student, d.unit) in deps.promoted))
    return []


def on_candidate_generated(event: CandidateGenerated, deps: RouterDeps) -> list[Out]:
    """A role chain's step answered: ask the next role (nothing after the last one)."""
    request = next_chain_step(event, deps.spec, deps.produced_by)
    if request is None:
        return []
    child(metrics.ROUTED, request.task.unit, request.teacher_id, request.strategy).inc()
    return [Out(deps.topics.generation_requests(request.teacher_id), request)]


def on_regeneration_requested(event: RegenerationRequested, deps: RouterDeps) -> list[Out]:
    requests = regenerate(event, deps.spec, deps.produced_by)
    for request in requests:
        metrics.ROUTED.labels(request.task.unit, request.teacher_id, f"{request.strategy}:retry").inc()
    return [Out(deps.topics.generation_requests(r.teacher_id), r) for r in requests]


def on_candidates_judged(event: CandidatesJudged, deps: RouterDeps) -> list[Out]:
    """Value routing learns acceptance and cost per teacher and unit from every verdict."""
    deps.table.learn(event)
    unit = event.task.unit
    for jc in event.candidates:
        stats = deps.table.stats[(unit, jc.teacher_id)]
        metrics.ACCEPTANCE.labels(unit, jc.teacher_id).set(stats.acceptance)
        metrics.COST_PER_ACCEPTED.labels(unit, jc.teacher_id).set(stats.cost_per_accepted if stats.accepted else -1)
        metrics.JUDGED.labels(unit, jc.teacher_id).set(stats.judged)
    return []


def promotes(deps: RouterDeps) -> bool:
    return bool(deps.spec.promotion)


def tasks_front_door(deps: RouterDeps) -> dict[str, Any]:
    """The tasks topic is bounded in size, and takes events or bare task objects from upstream producers."""
    def parse(payload: bytes) -> TaskSubmitted:
        return parse_task_record(payload, deps.spec, deps.settings.max_task_bytes)

    return {"max_bytes": deps.settings.max_task_bytes + ENVELOPE_BYTES, "parse": parse}


SUBSCRIPTIONS = [
    Subscription("tasks", TaskSubmitted, on_task_submitted, options=tasks_front_door),
    Subscription("regeneration", RegenerationRequested, on_regeneration_requested, "-regeneration",
                 enabled=retries_enabled),
    Subscription("candidates", CandidateGenerated, on_candidate_generated, "-chain", enabled=uses_strategy("chain")),
    Subscription("verdicts", CandidatesJudged, on_candidates_judged, "-feedback", enabled=uses_strategy("value"),
                 options=after_rebuild),
    Subscription("promotions", LoopDecided, on_loop_decided, "-promotions", enabled=promotes),
]
