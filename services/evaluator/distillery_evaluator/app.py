"""Evaluator wiring: StudentTrained in, EvaluationCompleted (and a report) out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from prometheus_client import Gauge

from distillery import ids
from distillery.bus import In, Out
from distillery.events import (CandidatesJudged, EvaluationCompleted, StudentTrained, TaskSubmitted, Trace,
                               parse_event)
from distillery.kafka import read_snapshot
from distillery.service import make_app, make_bus
from distillery.settings import ServiceSettings, load_settings
from distillery.spec import load_spec
from distillery_evaluator import __version__
from distillery_evaluator.logic import report_markdown, roi, score, teacher_outputs, write_outputs
from distillery_evaluator.students import plot_scores, student_outputs

ACCURACY = Gauge("distillery_evaluator_accuracy", "Held-out accuracy", ["unit", "subject"])
GAP = Gauge("distillery_evaluator_teacher_gap", "Best teacher accuracy minus trained student accuracy", ["unit"])
ROI = Gauge("distillery_evaluator_roi", "Net saving over the horizon divided by offline cost")
NET = Gauge("distillery_evaluator_net_saving_usd", "Net saving over the horizon in USD")
BREAK_EVEN = Gauge("distillery_evaluator_break_even_requests", "Requests until the offline cost is paid back (-1: never)")


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
    bus = make_bus(settings, "evaluator", __version__)

    async def evaluate(trained: StudentTrained) -> EvaluationCompleted:
        recipe = spec.students[trained.student]
        tasks = {e.task.task_id: e.task for e in await read_events(settings, bus.topics.tasks, TaskSubmitted)}
        eval_tasks = sorted((t for t in tasks.values() if t.split == "eval" and t.unit in recipe.units),
                            key=lambda t: t.task_id)
        verdicts = {v.verdict_id: v for v in await read_events(settings, bus.topics.verdicts, CandidatesJudged)}
        outputs = teacher_outputs(list(verdicts.values()))
        outputs += await asyncio.to_thread(student_outputs, trained, recipe, spec, eval_tasks, settings.device)
        scores = score(outputs, spec)
        out_dir = Path(trained.artifact_dir) / "evaluation"
        out_dir.mkdir(parents=True, exist_ok=True)
        write_outputs(outputs, spec, out_dir / "outputs.jsonl")
        train_candidates = [jc for v in verdicts.values() if v.task.split == "train" for jc in v.candidates]
        offline = {
            "teacher_generation": sum(jc.cost_usd for jc in train_candidates),
            "judging": len(train_candidates) * spec.economics.judge_cost_per_candidate_usd,
            "training": trained.train_cost_usd,
        }
        ledger = roi(scores, offline, spec)
        overlap = len(set(trained.manifest.get("task_ids", [])) & {t.task_id for t in eval_tasks})
        plots = [plot_scores(scores, out_dir / "accuracy.png")]
        (out_dir / "report.md").write_text(report_markdown(trained.student, trained.student_id, scores, ledger, overlap, plots))
        (out_dir / "scores.json").write_text(json.dumps([s.model_dump() for s in scores], indent=2))
        _export(scores, ledger)
        return EvaluationCompleted(
            evaluation_id=ids.content_id("eval", trained.student_id, [t.task_id for t in eval_tasks]),
            student_id=trained.student_id, scores=scores, roi=ledger, report_path=str(out_dir / "report.md"),
            produced_by=bus.produced_by, trace=Trace(causation_id=trained.event_id),
        )

    async def on_students(items: list[In[StudentTrained]]) -> list[Out]:
        return [Out(bus.topics.evaluations, await evaluate(item.event)) for item in items
                if item.event.student in spec.students]

    bus.subscribe(bus.topics.students, StudentTrained, on_students, group_id=settings.group("evaluator"),
                  max_records=1, max_poll_interval_ms=3_600_000)
    return make_app(bus, spec), settings


def _export(scores, ledger) -> None:
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
