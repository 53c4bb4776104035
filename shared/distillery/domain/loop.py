"""The closed loop's state, read back from the topics (docs/architecture.md §17).

Which units a student's next round leaves out (a stop signal holds), and which units a student
serves in shadow (promoted, not demoted). Plain functions over events, so the trainer, the router,
the teachers, the evaluator and the CLI read the same state, and a replay of the topics rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from distillery.contracts.events import EvaluationCompleted, LoopDecided, SampleCurated

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
    """The units of ``student`` whose stop signal holds: the latest evaluation of the recipe's main
    line (no experiment variant) fired a signal for the unit, and since that evaluation neither an
    operator resumed the unit (``distillery resume``) nor real samples of it were imported.

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
