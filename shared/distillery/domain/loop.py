"""The closed loop's state, read back from the topics (docs/architecture.md §16).

Which units a student's next round leaves out (a stop signal holds), and which units a student
serves in shadow (promoted, not demoted). Plain functions over events, so the trainer, the router,
the teachers, the evaluator and the CLI read the same state, and a replay of the topics rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import mean

from distillery.contracts.events import (
    ACCEPTED_POOLS,
    CandidatesJudged,
    EvaluationCompleted,
    JudgedCandidate,
    LoopDecided,
    SampleCurated,
    Task,
)
from distillery.contracts.spec import CapabilitySpec
from distillery.domain.checkers import canonical_json, parse_json_answer
from distillery.domain.scoring import answers_equal, extract_final_answer, is_decline, parse_tool_calls

# A scheduled round's request reason starts with this (``round N: why``; distillery_trainer.rounds).
ROUND_REASON = "round"

# What to do instead of distilling more of a stopped unit (the seed's recommendation).
RECOMMENDATION = ("add real data (`distillery samples import`), retrieval or tool access instead of more distilled "
                  "samples; `distillery resume UNIT` brings the unit back")


@dataclass(frozen=True)
class Stop:
    """A unit the student's rounds leave out: the evaluation whose stop signals fired, and which."""

    unit: str
    evaluation_id: str
    student_id: str
    signals: dict[str, str]  # signal -> reason
    since: datetime


def stopped_units(student: str, evaluations: list[EvaluationCompleted], decisions: list[LoopDecided],
                  samples: list[SampleCurated]) -> dict[str, Stop]:
    """The units of ``student`` whose stop signal holds: an evaluation of the recipe's main line (no
    experiment variant) fired a signal for the unit, and since that evaluation neither an operator
    resumed the unit (``distillery resume``) nor real samples of it were imported.

    A unit left out of a round is not trained on, so later evaluations may no longer fire for it:
    the stop holds until it is lifted, not until the signal goes quiet."""
    stops: dict[str, Stop] = {}
    for e in evaluations:
        if e.student != student or e.variant is not None:
            continue
        for unit, fired in e.unit_signals.items():  # a unit stopped again after a lift gets the new stop
            if fired and (unit not in stops or _lifted(stops[unit], student, decisions, samples)):
                stops[unit] = Stop(unit, e.evaluation_id, e.student_id, dict(fired), e.produced_at)
    return {unit: stop for unit, stop in stops.items() if not _lifted(stop, student, decisions, samples)}


def _lifted(stop: Stop, student: str, decisions: list[LoopDecided], samples: list[SampleCurated]) -> bool:
    resumed = any(d.action == "resume" and d.student == student and d.unit == stop.unit and d.produced_at >= stop.since
                  for d in decisions)
    real = any(s.origin == "real" and s.unit == stop.unit and s.produced_at >= stop.since for s in samples)
    return resumed or real


def serving(decisions: list[LoopDecided]) -> dict[tuple[str, str], LoopDecided]:
    """(student recipe, unit) -> the promotion in force: the latest ``promote`` not followed by a
    ``demote`` of the same trained student. Decisions are read in topic order; a redelivered
    decision (same id) changes nothing."""
    current: dict[tuple[str, str], LoopDecided] = {}
    seen: set[str] = set()
    for d in decisions:
        if d.decision_id in seen:  # redelivered: a promotion repeated after its demotion stays demoted
            continue
        seen.add(d.decision_id)
        key = (d.student, d.unit)
        if d.action == "promote":
            current[key] = d
        elif d.action == "demote" and key in current and current[key].student_id == d.student_id:
            del current[key]
    return current


def demoted(decisions: list[LoopDecided]) -> set[tuple[str, str]]:
    """(trained student id, unit) pairs once demoted: that student is never promoted for the unit again
    (a later round's student may be)."""
    return {(d.student_id, d.unit) for d in decisions if d.action == "demote"}


# --- a promoted student's live quality ----------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """A promoted student's last ``n`` judged shadow answers against the teachers on the same tasks."""

    n: int
    student_quality: float  # share of its answers the judge accepts
    teacher_quality: float  # share of the best teacher's answers accepted, same tasks
    agreement: float  # share where the student's answer says what the best teacher's says
    errors: int  # shadow answers pooled `failure`: broken output, or the deployment errored (missing artifact, crash)


def live_quality(verdicts: list[CandidatesJudged], promotion: LoopDecided, deployment: str, window: int,
                 spec: CapabilitySpec) -> Live | None:
    """The live window of ``promotion`` (None while no shadow answer has a teacher verdict to compare).

    Shadow answers count from the promotion on, each once (a redelivered verdict repeats its id);
    a task counts once its teachers' verdict is on the topic too; the last ``window`` such tasks."""
    teacher_best: dict[str, JudgedCandidate] = {}
    shadow: dict[str, tuple[str, JudgedCandidate]] = {}  # verdict id -> (task id, answer), topic order
    for v in verdicts:
        if v.task.unit != promotion.unit:
            continue
        if v.shadow:
            mine = [c for c in v.candidates if c.teacher_id == deployment]
            if mine and v.produced_at >= promotion.produced_at:
                shadow.setdefault(v.verdict_id, (v.task.task_id, mine[0]))
        elif v.candidates:
            teacher_best[v.task.task_id] = min(v.candidates, key=lambda c: c.rank)  # the latest verdict wins
    paired = [(task_id, jc) for task_id, jc in shadow.values() if task_id in teacher_best][-window:]
    if not paired:
        return None
    task_of = {v.task.task_id: v.task for v in verdicts if v.task.unit == promotion.unit}
    return Live(
        n=len(paired),
        student_quality=round(mean(jc.pool in ACCEPTED_POOLS for _, jc in paired), 4),
        teacher_quality=round(mean(teacher_best[t].pool in ACCEPTED_POOLS for t, _ in paired), 4),
        agreement=round(mean(same_answer(jc.text, teacher_best[t].text, spec, task_of[t]) for t, jc in paired), 4),
        errors=sum(1 for _, jc in paired if jc.pool == "failure"),
    )


def same_answer(a: str, b: str, spec: CapabilitySpec, task: Task) -> bool:
    """Do two outputs say the same thing in the unit's form (JSON object, final number, calls, or a decline)?"""
    form = spec.units[task.unit].output_form
    if form == "json":
        ja, jb = parse_json_answer(a), parse_json_answer(b)
        return ja is not None and jb is not None and canonical_json(ja) == canonical_json(jb)
    if form == "final_answer":
        fa, fb = extract_final_answer(a), extract_final_answer(b)
        return fa is not None and answers_equal(fa, fb)
    if is_decline(a) or is_decline(b):
        return is_decline(a) and is_decline(b)
    ca, cb = parse_tool_calls(a), parse_tool_calls(b)
    return bool(ca) and ca == cb
