"""Evaluator wiring: StudentTrained in, EvaluationCompleted (and a report) out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from prometheus_client import Gauge

from distillery.contracts import ids
from distillery.runtime.bus import In, Out
from distillery.contracts.events import (CandidateGenerated, CandidatesJudged, EvaluationCompleted, ReviewDecided, StudentTrained, TaskSubmitted,
                               Trace, parse_event)
from distillery.runtime.kafka import read_snapshot
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.domain.students import check_student_bases
from distillery.contracts.spec import load_spec
from distillery_evaluator import __version__, attribution
from distillery_evaluator.logic import (agreement, best_teachers, breakdown, error_classes, is_correct, roi, score,
                                        teacher_outputs, unit_metrics, write_outputs)
from distillery_evaluator.report import ReportData, write_report
from distillery_evaluator.signals import Round, StopConfig, stop_signals
from distillery_evaluator.students import student_outputs

ACCURACY = Gauge("distillery_evaluator_accuracy", "Held-out accuracy", ["unit", "subject"])
GAP = Gauge("distillery_evaluator_teacher_gap", "Best teacher accuracy minus trained student accuracy", ["unit"])
ROI = Gauge("distillery_evaluator_roi", "Net saving over the horizon divided by offline cost")
NET = Gauge("distillery_evaluator_net_saving_usd", "Net saving over the horizon in USD")
BREAK_EVEN = Gauge("distillery_evaluator_break_even_requests", "Requests until the offline cost is paid back (-1: never)")
LEDGER = Gauge("distillery_evaluator_ledger", "Every figure of the latest ROI ledger", ["item"])
METRIC = Gauge("distillery_evaluator_metric", "Unit metrics of the latest evaluation", ["unit", "subject", "metric"])
AGREEMENT = Gauge("distillery_evaluator_teacher_agreement", "Share of held-out tasks where the student answers like the best teacher", ["unit"])
STOP = Gauge("distillery_evaluator_stop_signal", "1 while a stop signal fires; the reason label says why", ["signal", "reason"])


class EvaluatorSettings(ServiceSettings):
    device: str = "cpu"


async def read_events(settings, topic, model):
    snapshot = await read_snapshot(settings, topic)
    events = []
    for record in snapshot.records:
        with contextlib.suppress(Exception):
            events.append(parse_event(model, record.value))
    return events


def build():
    settings = load_settings(EvaluatorSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    bus = make_bus(settings, "evaluator", __version__)
    stop_config = StopConfig(**spec.stop_signals.model_dump())

    async def evaluate(trained: StudentTrained) -> EvaluationCompleted:
        recipe = spec.students[trained.student]
        tasks = {e.task.task_id: e.task for e in await read_events(settings, bus.topics.tasks, TaskSubmitted)}
        eval_tasks = sorted((t for t in tasks.values() if t.split == "eval" and t.unit in recipe.units),
                            key=lambda t: t.task_id)
        verdicts = {v.verdict_id: v for v in await read_events(settings, bus.topics.verdicts, CandidatesJudged)}
        candidates = await read_events(settings, bus.topics.candidates, CandidateGenerated)
        outputs = teacher_outputs(candidates, eval_tasks, spec)
        # the untrained base is measured with the main run and with the reference (`full`) runs of an
        # experiment; the other variants only need the trained student
        with_before = trained.variant is None or trained.variant.name == attribution.REFERENCE
        outputs += await asyncio.to_thread(student_outputs, trained, recipe, spec, eval_tasks, settings.device,
                                           with_before)
        scores = score(outputs, spec)
        out_dir = Path(trained.artifact_dir) / "evaluation"
        out_dir.mkdir(parents=True, exist_ok=True)
        write_outputs(outputs, spec, out_dir / "outputs.jsonl")
        after = [o for o in outputs if o.subject == "student:after"]
        errors = error_classes(after, spec)
        ledger = roi(scores, await offline_costs(trained, verdicts.values()), spec)
        agree = agreement(outputs, spec, best_teachers(scores))
        evaluation = EvaluationCompleted(
            evaluation_id=ids.content_id("eval", trained.student_id, [t.task_id for t in eval_tasks],
                                         trained.variant.model_dump(mode="json") if trained.variant else None),
            student_id=trained.student_id, scores=scores, roi=ledger, report_path=str(out_dir / "report.html"),
            student=trained.student, samples=int(trained.manifest.get("samples", 0)), variant=trained.variant,
            correct={o.task.task_id: is_correct(o, spec) for o in after}, agreement=agree, error_classes=errors,
            produced_by=bus.produced_by, trace=Trace(causation_id=trained.event_id),
        )
        history = await read_events(settings, bus.topics.evaluations, EvaluationCompleted)
        rounds = rounds_of([e for e in history if e.student == trained.student and e.variant is None
                            and e.student_id != trained.student_id] + [evaluation])
        signals = stop_signals(rounds, stop_config) if trained.variant is None else []
        evaluation = evaluation.model_copy(update={"signals": {s.name: s.reason for s in signals if s.fired}})
        real = dict(trained.manifest.get("real_per_unit", {}))
        data = ReportData(
            student=trained.student, student_id=trained.student_id, scores=scores, breakdown=breakdown(outputs, spec),
            metrics=unit_metrics(outputs, spec) + [{"unit": u, "subject": "student:after", "metric": "teacher_agreement",
                                                    "value": v} for u, v in agree.items()],
            ledger=ledger, signals=signals, rounds=rounds,
            heldout_overlap=len(set(trained.manifest.get("task_ids", [])) & {t.task_id for t in eval_tasks}),
            real_samples=real, unit_samples=dict(trained.manifest.get("per_unit", {})),
        )
        write_report(data, out_dir)
        (out_dir / "scores.json").write_text(json.dumps([s.model_dump() for s in scores], indent=2))
        if trained.variant is None:
            _export(scores, ledger, data.metrics, agree, signals)
            return evaluation
        return evaluation.model_copy(update={"attribution_path": await attribute(trained, evaluation, history, data, eval_tasks)})

    async def offline_costs(trained: StudentTrained, verdicts) -> dict[str, float]:
        train_candidates = [jc for v in verdicts if v.task.split == "train" for jc in v.candidates]
        econ = spec.economics
        decisions = await read_events(settings, bus.topics.reviews, ReviewDecided)
        return {
            "teacher_generation": sum(jc.cost_usd for jc in train_candidates),
            "judging": len(train_candidates) * econ.judge_cost_per_candidate_usd,
            "human_review": len(decisions) * econ.review_seconds_per_decision / 3600 * econ.reviewer_rate_usd_per_hour,
            "training": trained.train_cost_usd,
        }

    async def attribute(trained, evaluation, history, data, eval_tasks) -> str | None:
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
        return str(write_report(data, out_dir)["html"])

    async def on_students(items: list[In[StudentTrained]]) -> list[Out]:
        return [Out(bus.topics.evaluations, await evaluate(item.event)) for item in items
                if item.event.student in spec.students]

    bus.subscribe(bus.topics.students, StudentTrained, on_students, group_id=settings.group("evaluator"),
                  max_records=1, max_poll_interval_ms=3_600_000)
    return make_app(bus, spec), settings


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


def _export(scores, ledger, metrics, agree, signals) -> None:
    best_teacher: dict[str, float] = {}
    for s in scores:
        ACCURACY.labels(s.unit, s.subject).set(s.accuracy)
        if s.subject.startswith("teacher:"):
            best_teacher[s.unit] = max(best_teacher.get(s.unit, 0.0), s.accuracy)
    for s in scores:
        if s.subject == "student:after" and s.unit in best_teacher:
            GAP.labels(s.unit).set(best_teacher[s.unit] - s.accuracy)
    ROI.set(ledger["roi"])
    NET.set(ledger["net_saving_usd"])
    BREAK_EVEN.set(ledger["break_even_requests"])
    for item, value in ledger.items():
        LEDGER.labels(item).set(value)
    for row in metrics:
        METRIC.labels(row["unit"], row["subject"], row["metric"]).set(row["value"])
    for unit, value in agree.items():
        AGREEMENT.labels(unit).set(value)
    STOP.clear()  # a signal's reason changes between rounds: no stale series
    for s in signals:
        STOP.labels(s.name, s.reason).set(float(s.fired))
