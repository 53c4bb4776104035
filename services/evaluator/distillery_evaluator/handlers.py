"""The evaluator's use case: a trained student in, its held-out evaluation, report, ROI ledger and
stop signals out (and, when an experiment completes, its attribution)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    EvaluationCompleted,
    LoopDecided,
    ReviewDecided,
    StudentTrained,
    Task,
    TaskSubmitted,
    Trace,
)
from distillery.contracts.settings import ServiceSettings
from distillery.domain.loop import serving
from distillery.runtime.kafka import replay
from distillery.runtime.wiring import Context, In, Out, Subscription
from distillery_evaluator import attribution, loop, metrics, report, students
from distillery_evaluator.logic import (
    agreement,
    best_teachers,
    breakdown,
    error_classes,
    is_correct,
    roi,
    score,
    teacher_outputs,
    unit_metrics,
    write_outputs,
)
from distillery_evaluator.report import ReportData
from distillery_evaluator.signals import Round, StopConfig, stop_signals

Read = Callable[[str, type], Awaitable[list[Any]]]  # (topic, event model) -> the topic's events, in order


class EvaluatorSettings(ServiceSettings):
    device: str = "cpu"


@dataclass(kw_only=True)
class EvaluatorDeps(Context):
    settings: EvaluatorSettings = field(default_factory=EvaluatorSettings)
    read: Read | None = None  # None: replay from the settings' broker
    # (trained, recipe, spec, tasks, device, include_before) -> the student's outputs on the held-out tasks
    student_outputs: Callable[..., list[Any]] = students.student_outputs
    # (report data, folder) -> the written files by name; its plots are most of an evaluation without a model
    write_report: Callable[[report.ReportData, Path], dict[str, Path]] = report.write_report
    live_units: set[str] = field(default_factory=set)  # units a student is promoted for (last seen)

    def __post_init__(self) -> None:
        if self.read is None:
            self.read = topic_reader(self.settings)


def topic_reader(settings: ServiceSettings) -> Read:
    async def read(topic: str, model: type) -> list[Any]:
        return (await replay(settings, topic, model)).events

    return read


async def on_student_trained(items: list[In[StudentTrained]], deps: EvaluatorDeps) -> list[Out]:
    """Students of recipes this spec does not have are not this deployment's to evaluate. An
    evaluation within tolerance promotes the student for its units (spec ``promotion``)."""
    outs = []
    for item in items:
        if item.event.student not in deps.spec.students:
            continue
        evaluation = await evaluate(item.event, deps)
        outs.append(Out(deps.topics.evaluations, evaluation))
        if deps.spec.promotion:
            decisions = await deps.read(deps.topics.promotions, LoopDecided)
            for decision in loop.promotions(evaluation, item.event, deps.spec, decisions, deps.produced_by):
                metrics.PROMOTIONS.labels(decision.student, decision.unit).inc()
                outs.append(Out(deps.topics.promotions, decision))
    return outs


async def on_verdicts(items: list[In[CandidatesJudged]], deps: EvaluatorDeps) -> list[Out]:
    """Shadow answers, or teachers' verdicts of a unit in shadow, landed: the live window of every
    promotion in force, exported; a student whose live quality trails the teachers beyond the
    tolerance is demoted (docs/evaluator.md). A shadow answer is often judged before the teachers'
    answers to the same task are (it waits for no one), so a teachers' verdict can complete a window."""
    if not any(item.event.shadow or item.event.task.unit in deps.live_units for item in items):
        return []
    for item in items:
        if item.event.shadow:
            for jc in item.event.candidates:
                metrics.SHADOW.labels(item.event.task.unit, jc.pool).inc()
    decisions = await deps.read(deps.topics.promotions, LoopDecided)
    current = {key: d for key, d in serving(decisions).items() if d.student in deps.spec.promotion}
    deps.live_units = {unit for _, unit in current}
    if not current:
        return []
    verdicts = await deps.read(deps.topics.verdicts, CandidatesJudged)
    outs = []
    for (student, unit), promotion in current.items():
        policy = deps.spec.promotion[student]
        live = loop.live_quality(verdicts, promotion, policy.deployment, policy.window, deps.spec)
        metrics.export_live(student, unit, live)
        demoted = loop.demotion(promotion, live, deps.spec, deps.produced_by)
        if demoted is not None:
            metrics.DEMOTIONS.labels(student, unit).inc()
            deps.live_units.discard(unit)
            outs.append(Out(deps.topics.promotions, demoted))
    return outs


async def evaluate(trained: StudentTrained, deps: EvaluatorDeps) -> EvaluationCompleted:
    spec, topics = deps.spec, deps.topics
    recipe = spec.students[trained.student]
    eval_tasks = held_out_tasks(await deps.read(topics.tasks, TaskSubmitted), recipe.units)
    # shadow answers are a promoted student's, not a teacher's: they cost nothing offline and score no teacher
    verdicts = {v.verdict_id: v for v in await deps.read(topics.verdicts, CandidatesJudged) if not v.shadow}
    candidates = [c for c in await deps.read(topics.candidates, CandidateGenerated) if not c.shadow]
    outputs = teacher_outputs(candidates, eval_tasks, spec)
    # the untrained base is measured with the main run and with the reference (`full`) runs of an
    # experiment; the other variants only need the trained student
    with_before = trained.variant is None or trained.variant.name == attribution.REFERENCE
    outputs += await asyncio.to_thread(deps.student_outputs, trained, recipe, spec, eval_tasks, deps.settings.device,
                                       with_before)
    scores = score(outputs, spec)
    out_dir = Path(trained.artifact_dir) / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(outputs, spec, out_dir / "outputs.jsonl")
    after = [o for o in outputs if o.subject == "student:after"]
    ledger = roi(scores, await offline_costs(trained, verdicts.values(), deps), spec)
    agree = agreement(outputs, spec, best_teachers(scores))
    evaluation = EvaluationCompleted(
        evaluation_id=ids.content_id("eval", trained.student_id, [t.task_id for t in eval_tasks],
                                     trained.variant.model_dump(mode="json") if trained.variant else None),
        student_id=trained.student_id, scores=scores, roi=ledger, report_path=str(out_dir / "report.html"),
        student=trained.student, samples=int(trained.manifest.get("samples", 0)), variant=trained.variant,
        correct={o.task.task_id: is_correct(o, spec) for o in after}, agreement=agree,
        error_classes=error_classes(after, spec), produced_by=deps.produced_by, trace=Trace(causation_id=trained.event_id),
    )
    history = await deps.read(topics.evaluations, EvaluationCompleted)
    rounds = rounds_of([e for e in history if e.student == trained.student and e.variant is None
                        and e.student_id != trained.student_id] + [evaluation])
    config = StopConfig(**spec.stop_signals.model_dump())
    signals = stop_signals(rounds, config) if trained.variant is None else []
    per_unit = loop.unit_stop_signals(rounds, {u: error_classes([o for o in after if o.task.unit == u], spec)
                                               for u in recipe.units}, config) if trained.variant is None else {}
    # a unit this round left out was not trained: its flat accuracy says nothing, and must not undo a resume
    per_unit = {u: fired for u, fired in per_unit.items() if u not in trained.manifest.get("excluded_units", [])}
    evaluation = evaluation.model_copy(update={"signals": {s.name: s.reason for s in signals if s.fired},
                                               "unit_signals": per_unit})
    data = ReportData(
        student=trained.student, student_id=trained.student_id, scores=scores, breakdown=breakdown(outputs, spec),
        metrics=unit_metrics(outputs, spec) + [{"unit": u, "subject": "student:after", "metric": "teacher_agreement",
                                                "value": v} for u, v in agree.items()],
        ledger=ledger, signals=signals, rounds=rounds,
        heldout_overlap=len(set(trained.manifest.get("task_ids", [])) & {t.task_id for t in eval_tasks}),
        real_samples=dict(trained.manifest.get("real_per_unit", {})), unit_samples=dict(trained.manifest.get("per_unit", {})),
        unit_signals=per_unit, excluded_units=list(trained.manifest.get("excluded_units", [])),
    )
    deps.write_report(data, out_dir)
    (out_dir / "scores.json").write_text(json.dumps([s.model_dump() for s in scores], indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(data.metrics, indent=2))  # every metric row, for `report`
    if trained.variant is None:
        metrics.export(scores, ledger, data.metrics, agree, signals)
        return evaluation
    path = attribute(trained, evaluation, history, data, eval_tasks, deps)
    return evaluation.model_copy(update={"attribution_path": path})


def held_out_tasks(submitted: list[TaskSubmitted], units: list[str]) -> list[Task]:
    """The recipe's eval-split tasks, once each (the last submission of an id wins), by task id."""
    tasks = {e.task.task_id: e.task for e in submitted}
    return sorted((t for t in tasks.values() if t.split == "eval" and t.unit in units), key=lambda t: t.task_id)


async def offline_costs(trained: StudentTrained, verdicts, deps: EvaluatorDeps) -> dict[str, float]:
    """What the samples cost. A teacher's answer is paid once, however many judge versions read it
    (a replay re-judges, it does not re-generate); judging is paid once per candidate and version."""
    judged = {(jc.candidate_id, v.judge_version): jc for v in verdicts if v.task.split == "train"
              for jc in v.candidates}
    generated = {candidate_id: jc for (candidate_id, _), jc in judged.items()}
    econ = deps.spec.economics
    decisions = await deps.read(deps.topics.reviews, ReviewDecided)
    return {
        "teacher_generation": sum(jc.cost_usd for jc in generated.values()),
        "judging": len(judged) * econ.judge_cost_per_candidate_usd,
        "human_review": len(decisions) * econ.review_seconds_per_decision / 3600 * econ.reviewer_rate_usd_per_hour,
        "training": trained.train_cost_usd,
    }


def attribute(trained: StudentTrained, evaluation: EvaluationCompleted, history: list[EvaluationCompleted],
              data: ReportData, eval_tasks: list[Task], deps: EvaluatorDeps) -> str | None:
    """When this run completes its experiment: the attribution table and its report."""
    experiment = trained.variant.experiment_id
    members = [e for e in history if e.variant is not None and e.variant.experiment_id == experiment
               and e.student_id != trained.student_id] + [evaluation]
    if not experiment or not attribution.complete(members, trained.variant.members):
        return None
    rows = attribution.table(members, {t.task_id: t.unit for t in eval_tasks})
    out_dir = Path(trained.artifact_dir).parent / "experiments" / experiment
    out_dir.mkdir(parents=True, exist_ok=True)
    data.attribution = rows
    (out_dir / "attribution.json").write_text(json.dumps(rows, indent=2))
    return str(deps.write_report(data, out_dir)["html"])


def rounds_of(evaluations: list[EvaluationCompleted]) -> list[Round]:
    """The recipe's history in training order (the topic's order), one round per evaluated student."""
    seen: dict[str, Round] = {}
    for e in evaluations:
        if e.student_id in seen:
            continue
        after = {s.unit: s.accuracy for s in e.scores if s.subject == "student:after"}
        seen[e.student_id] = Round(
            student_id=e.student_id, samples=e.samples, accuracy=after, agreement=dict(e.agreement),
            offline_cost_usd=float(e.roi.get("offline_total_usd", 0.0)),
            teacher_cost_horizon_usd=float(e.roi.get("teacher_cost_horizon_usd", 0.0)),
            error_classes=dict(e.error_classes),
        )
    return list(seen.values())


def one_student_at_a_time(deps: EvaluatorDeps) -> dict[str, int]:
    """An evaluation runs a model over every held-out task: one student per batch, and the broker
    waits that long for the next poll."""
    return {"max_records": 1, "max_poll_interval_ms": 3_600_000}


def promotes(deps: EvaluatorDeps) -> bool:
    return bool(deps.spec.promotion)


SUBSCRIPTIONS = [
    Subscription("students", StudentTrained, on_student_trained, batch=True, options=one_student_at_a_time),
    Subscription("verdicts", CandidatesJudged, on_verdicts, "-shadow", batch=True, enabled=promotes),
]
