"""The evaluator's handlers called in-process: StudentTrained in, EvaluationCompleted (and the
files of the evaluation) out. The topics are plain lists behind a fake reader, the student's answers
come from a fake generator and the report's rendering (its plots: tests/unit/test_report_render.py)
is recorded, not drawn: no broker, no model."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    JudgedCandidate,
    Reference,
    ReviewDecided,
    StudentTrained,
    SubjectScore,
    Task,
    TaskSubmitted,
    Trace,
    Variant,
)
from distillery.contracts.spec import load_spec
from distillery.runtime.bus import In
from distillery_evaluator.handlers import EvaluatorDeps, EvaluatorSettings, on_student_trained
from distillery_evaluator.logic import Output
from distillery_evaluator.report import ReportData
from distillery_evaluator.students import AFTER, BEFORE
from tests.support import ROOT, candidate

EXAMPLE = load_spec(ROOT / "examples" / "spec.yaml")
# a reviewer's decision costs $1 here (100 s at $36/h), so the ledger's review line shows
SPEC = EXAMPLE.model_copy(update={"economics": EXAMPLE.economics.model_copy(
    update={"review_seconds_per_decision": 100, "reviewer_rate_usd_per_hour": 36.0})})
TOPICS = EvaluatorSettings(topic_prefix="unit").topics


def math(i: int, split: str = "eval") -> Task:
    return Task(task_id=f"m{i}", unit="math_steps", prompt=f"What is 2 + 2? ({i})", reference=Reference(answer="4"),
                split=split)


def submitted(task: Task) -> TaskSubmitted:
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id))


def verdict(task: Task, cost_usd: float) -> CandidatesJudged:
    judged = JudgedCandidate(candidate_id=f"c_{task.task_id}", teacher_id="qwen-coder", text="#### 4", pool="train",
                             rank=1, score=1.0, cost_usd=cost_usd)
    return CandidatesJudged(verdict_id=f"v_{task.task_id}", task=task, judge_version="rules-v1", candidates=[judged],
                            produced_by="judge@test")


def review(task: Task) -> ReviewDecided:
    judged = verdict(task, 0.0).candidates[0]
    return ReviewDecided(decision_id=f"d_{task.task_id}", task=task, candidate=judged, judge_version="rules-v1",
                         verdict_id=f"v_{task.task_id}", decision="accept", pool="train", produced_by="cli@test")


def earlier(student_id: str, samples: int, accuracy: float, variant: Variant | None = None) -> EvaluationCompleted:
    after = SubjectScore(unit="math_steps", subject=AFTER, n=4, accuracy=accuracy, mean_latency_s=0.1,
                         cost_per_request_usd=0.0, mean_output_tokens=5)
    return EvaluationCompleted(evaluation_id=f"e_{student_id}", student_id=student_id, student="tiny", scores=[after],
                               report_path="", samples=samples, variant=variant,
                               correct={f"m{i}": i < 2 for i in range(4)},
                               roi={"offline_total_usd": 1.0, "teacher_cost_horizon_usd": 100.0}, produced_by="test")


def topics_with(history: list[EvaluationCompleted] = ()) -> dict[str, list]:
    eval_tasks = [math(i) for i in range(4)]
    train_task = math(9, split="train")
    return {
        # a task submitted twice counts once; the training split is not held out
        TOPICS.tasks: [submitted(t) for t in eval_tasks] + [submitted(eval_tasks[0]), submitted(train_task)],
        TOPICS.candidates: [candidate(t, "Add them.\n#### 4", "qwen-coder", cost_usd=0.001) for t in eval_tasks],
        TOPICS.verdicts: [verdict(train_task, 0.25), verdict(eval_tasks[0], 5.0)],  # only training answers cost
        TOPICS.reviews: [review(train_task)],
        TOPICS.evaluations: list(history),
    }


class Reader:
    def __init__(self, events: dict[str, list]) -> None:
        self.events = events
        self.topics: list[str] = []

    async def read(self, topic: str, model: type) -> list:
        self.topics.append(topic)
        return [e for e in self.events.get(topic, []) if isinstance(e, model)]


class Student:
    """Stands in for students.student_outputs: right on even tasks after training, never before."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], bool]] = []

    def __call__(self, trained, recipe, spec, tasks, device, include_before) -> list[Output]:
        self.calls.append((trained.student_id, [t.task_id for t in tasks], include_before))
        after = [Output(t, AFTER, "#### 4" if i % 2 == 0 else "#### 5", 0.05, 0.0, 3) for i, t in enumerate(tasks)]
        before = [Output(t, BEFORE, "#### 7", 0.05, 0.0, 3) for t in tasks] if include_before else []
        return before + after


class Reports:
    """Stands in for report.write_report: what each report would show, and where."""

    def __init__(self) -> None:
        self.written: list[tuple[Path, ReportData, list | None]] = []

    def __call__(self, data: ReportData, out_dir: Path) -> dict[str, Path]:
        self.written.append((out_dir, data, data.attribution))  # attribute() sets it later
        return {"html": out_dir / "report.html"}


def trained(tmp_path, student_id: str = "student_now", samples: int = 3000, variant: Variant | None = None,
            student: str = "tiny") -> StudentTrained:
    return StudentTrained(student_id=student_id, student=student, version="v1",
                          artifact_dir=str(tmp_path / student / student_id), base_model="tiny-llama", recipe={},
                          manifest={"samples": samples, "task_ids": ["m9", "m0"], "per_unit": {"math_steps": samples}},
                          train_cost_usd=0.5, variant=variant, produced_by="trainer@test",
                          trace=Trace(causation_id="req_1"))


def item(event: StudentTrained) -> In[StudentTrained]:
    return In(event, ConsumerRecord(TOPICS.students, 0, 0, 0, 0, None, b"", None, 0, 0, []))


@dataclass
class Evaluated:
    outs: list
    reader: Reader
    student: Student
    reports: Reports


def evaluate(event: StudentTrained, history: list[EvaluationCompleted] = ()) -> Evaluated:
    reader, student, reports = Reader(topics_with(history)), Student(), Reports()
    deps = EvaluatorDeps(spec=SPEC, settings=EvaluatorSettings(topic_prefix="unit"), topics=TOPICS, read=reader.read,
                         student_outputs=student, write_report=reports)
    return Evaluated(asyncio.run(on_student_trained([item(event)], deps)), reader, student, reports)


def test_a_trained_student_is_scored_against_its_teachers_with_a_ledger_and_a_report(tmp_path) -> None:
    event = trained(tmp_path)
    run = evaluate(event)

    (out,) = run.outs
    assert out.topic == TOPICS.evaluations and isinstance(out.event, EvaluationCompleted)
    evaluation = out.event
    assert run.student.calls == [("student_now", ["m0", "m1", "m2", "m3"], True)]  # held out, once each, with the base
    scores = {s.subject: s.accuracy for s in evaluation.scores}
    assert scores == {"teacher:qwen-coder": 1.0, AFTER: 0.5, BEFORE: 0.0}
    assert evaluation.correct == {"m0": True, "m1": False, "m2": True, "m3": False}
    # offline cost: the training split's teacher answers, one review decision, the training run
    assert evaluation.roi["offline_teacher_generation_usd"] == 0.25 and evaluation.roi["offline_training_usd"] == 0.5
    assert evaluation.roi["offline_human_review_usd"] == 1.0
    assert evaluation.trace.causation_id == event.event_id and evaluation.attribution_path is None
    out_dir = tmp_path / "tiny" / "student_now" / "evaluation"
    assert evaluation.report_path == str(out_dir / "report.html")
    assert {"outputs.jsonl", "scores.json"} <= {p.name for p in out_dir.iterdir()}
    assert len(json.loads((out_dir / "scores.json").read_text())) == 3
    ((report_dir, data, _),) = run.reports.written
    assert report_dir == out_dir and data.scores == evaluation.scores and data.ledger == evaluation.roi
    assert data.heldout_overlap == 1  # m0 was in the training set's tasks too
    assert REGISTRY.get_sample_value("distillery_evaluator_accuracy", {"unit": "math_steps", "subject": AFTER}) == 0.5
    assert REGISTRY.get_sample_value("distillery_evaluator_teacher_gap", {"unit": "math_steps"}) == 0.5


def test_students_of_recipes_outside_the_spec_are_not_evaluated(tmp_path) -> None:
    run = evaluate(trained(tmp_path, student="astrologer"))
    assert run.outs == [] and run.reader.topics == [] and run.student.calls == [] and run.reports.written == []


def test_the_recipes_earlier_evaluations_become_rounds_that_fire_the_stop_signals(tmp_path) -> None:
    history = [earlier("s0", 1000, 0.5), earlier("s1", 2000, 0.5), earlier("s1", 2000, 0.5),  # redelivered: once
               earlier("other", 2500, 0.9, Variant(name="naive", experiment_id="x", members=2)),  # a variant: no round
               earlier("student_now", 500, 0.0)]  # this student evaluated before: replaced by this evaluation
    run = evaluate(trained(tmp_path), history)
    (out,) = run.outs
    ((_, data, _),) = run.reports.written
    assert [(r.student_id, r.samples) for r in data.rounds] == [("s0", 1000), ("s1", 2000), ("student_now", 3000)]
    assert set(out.event.signals) == {"marginal_gain"}
    assert out.event.signals["marginal_gain"].startswith("gain_0_per_1k_below")
    assert REGISTRY.get_sample_value("distillery_evaluator_stop_signal",
                                     {"signal": "marginal_gain", "reason": out.event.signals["marginal_gain"]}) == 1.0
    (first,) = evaluate(trained(tmp_path, student_id="student_first")).outs
    assert first.event.signals == {}  # one round is too few to stop on


def test_the_run_that_completes_an_experiment_writes_its_attribution(tmp_path) -> None:
    full = Variant(name="full", experiment_id="exp1", members=2)
    naive = Variant(name="naive", bucket="multi_teacher", experiment_id="exp1", members=2)
    alone = evaluate(trained(tmp_path, student_id="student_naive", variant=naive))
    (first,) = alone.outs
    assert first.event.attribution_path is None and first.event.signals == {}
    assert alone.student.calls[0][2] is False  # a non-reference variant is not compared with the base
    assert len(alone.reports.written) == 1  # its own report only: the experiment is not complete

    last = evaluate(trained(tmp_path, student_id="student_full", variant=full), [first.event])
    (out,) = last.outs
    assert last.student.calls[0][2] is True
    experiment_dir = tmp_path / "tiny" / "experiments" / "exp1"
    assert out.event.attribution_path == str(experiment_dir / "report.html")
    rows = json.loads((experiment_dir / "attribution.json").read_text())
    assert {(r["unit"], r["variant"]) for r in rows} >= {("math_steps", "naive"), ("math_steps", "full")}
    (_, _, no_table), (report_dir, _, table) = last.reports.written
    assert no_table is None and report_dir == experiment_dir and table == rows


def test_a_judge_replay_does_not_pay_for_the_teachers_answers_twice(tmp_path) -> None:
    train_task = math(9, split="train")
    replayed = verdict(train_task, 0.25).model_copy(update={"verdict_id": "v_replay", "judge_version": "rules-v2"})
    reader = Reader({**topics_with(), TOPICS.verdicts: [verdict(train_task, 0.25), replayed, verdict(train_task, 0.25)]})
    deps = EvaluatorDeps(spec=SPEC, settings=EvaluatorSettings(topic_prefix="unit"), topics=TOPICS, read=reader.read,
                         student_outputs=Student(), write_report=Reports())
    (out,) = asyncio.run(on_student_trained([item(trained(tmp_path))], deps))
    roi = out.event.roi
    assert roi["offline_teacher_generation_usd"] == 0.25  # one answer, judged by two versions
    assert roi["offline_judging_usd"] == 2 * SPEC.economics.judge_cost_per_candidate_usd
