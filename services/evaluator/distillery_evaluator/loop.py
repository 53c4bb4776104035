"""The evaluator's part of the closed loop (docs/evaluator.md "The closed loop"), as plain functions:

* **per-unit stop signals**: which units the student's next round leaves out;
* **promotion**: a trained student within tolerance of a unit's best teacher, and paying at the
  configured traffic, is promoted for that unit (a share of its live tasks also goes to the student);
* **live quality and demotion**: over the last ``window`` shadow answers, the student's judged
  quality (the share the judge accepts) against the best teacher's on the same tasks; below the
  tolerance, the student is demoted.
"""

from __future__ import annotations

from dataclasses import replace

from distillery.contracts.events import (
    EvaluationCompleted,
    LoopDecided,
    StudentTrained,
    loop_decision_id,
)
from distillery.contracts.spec import CapabilitySpec
from distillery.domain.loop import Live, demoted, live_quality, serving
from distillery_evaluator.logic import best_teachers
from distillery_evaluator.signals import Round, StopConfig, agreement_without_accuracy, error_shift, marginal_gain

# --- per-unit stop signals --------------------------------------------------------------------


def unit_stop_signals(rounds: list[Round], unit_errors: dict[str, dict[str, int]],
                      config: StopConfig) -> dict[str, dict[str, str]]:
    """unit -> its fired stop signals (name -> reason), from the recipe's rounds seen one unit at a time.

    ``marginal_gain`` and ``agreement_without_accuracy`` read the unit's own accuracy and agreement
    over the rounds; ``error_shift`` the latest student's errors on the unit (``unit_errors``).
    ``maintenance_cost`` is the recipe's as a whole and stops no single unit."""
    if not rounds:
        return {}
    fired: dict[str, dict[str, str]] = {}
    for unit in sorted(rounds[-1].accuracy):
        history = [replace(r, accuracy=_only(r.accuracy, unit), agreement=_only(r.agreement, unit)) for r in rounds]
        history[-1] = replace(history[-1], error_classes=unit_errors.get(unit, {}))
        signals = [marginal_gain(history, config), agreement_without_accuracy(history, config),
                   error_shift(history, config)]
        hits = {s.name: s.reason for s in signals if s.fired}
        if hits:
            fired[unit] = hits
    return fired


def _only(values: dict[str, float], unit: str) -> dict[str, float]:
    return {unit: values[unit]} if unit in values else {}


# --- promotion --------------------------------------------------------------------------------


def promotions(evaluation: EvaluationCompleted, trained: StudentTrained, spec: CapabilitySpec,
               decisions: list[LoopDecided], produced_by: str) -> list[LoopDecided]:
    """The units this evaluated student is promoted for: within ``economics.quality_tolerance`` of the
    unit's best teacher (the ledger's ``student_serves_<unit>``) and paying at the configured traffic
    (``break_even_reached``). Only recipes with a ``promotion`` policy, only the main line (no
    experiment variant), never a student once demoted for the unit, never twice."""
    name = evaluation.student
    if name not in spec.promotion or evaluation.variant is not None:
        return []
    ledger = evaluation.roi
    pays = ledger.get("break_even_reached") == 1.0
    current, once_demoted = serving(decisions), demoted(decisions)
    scores = {(s.unit, s.subject): s.accuracy for s in evaluation.scores}
    best = best_teachers(evaluation.scores)
    out = []
    for unit in spec.students[name].units:
        if ledger.get(f"student_serves_{unit}") != 1.0 or not pays or (trained.student_id, unit) in once_demoted:
            continue
        held = current.get((name, unit))
        if held is not None and held.student_id == trained.student_id:
            continue
        teacher = scores.get((unit, best.get(unit, "")), 0.0)
        student = scores.get((unit, "student:after"), 0.0)
        tolerance = spec.economics.quality_tolerance
        reason = (f"held-out accuracy {student:.3f} within {tolerance:g} of {best.get(unit)} ({teacher:.3f}); "
                  f"pays back at {ledger.get('break_even_requests_per_day', -1):g} requests/day "
                  f"(configured {spec.economics.requests_per_day:g})")
        out.append(LoopDecided(
            decision_id=loop_decision_id("promote", name, unit, evaluation.evaluation_id), action="promote",
            student=name, unit=unit, student_id=trained.student_id, artifact_dir=trained.artifact_dir, reason=reason,
            figures={"student_accuracy": student, "teacher_accuracy": teacher, "tolerance": tolerance,
                     "share": spec.promotion[name].share},
            produced_by=produced_by,
        ))
    return out


__all__ = ["Live", "demotion", "live_quality", "promotions", "unit_stop_signals"]

# --- demotion ----------------------------------------------------------------


def demotion(promotion: LoopDecided, live: Live | None, spec: CapabilitySpec, produced_by: str) -> LoopDecided | None:
    """Demote once the window is full and the student's live quality trails the teachers' by more
    than the tolerance. One demotion per promotion (its id derives from the promotion's)."""
    policy = spec.promotion[promotion.student]
    tolerance = spec.live_tolerance(promotion.student)
    if live is None or live.n < policy.window or live.student_quality >= live.teacher_quality - tolerance:
        return None
    reason = (f"live judged quality {live.student_quality:.3f} below the teachers' {live.teacher_quality:.3f} "
              f"minus tolerance {tolerance:g} over the last {live.n} shadow answers ({live.errors} failed)")
    return LoopDecided(
        decision_id=loop_decision_id("demote", promotion.student, promotion.unit, promotion.decision_id),
        action="demote", student=promotion.student, unit=promotion.unit, student_id=promotion.student_id,
        artifact_dir=promotion.artifact_dir, reason=reason,
        figures={"student_quality": live.student_quality, "teacher_quality": live.teacher_quality,
                 "agreement": live.agreement, "window": float(live.n), "errors": float(live.errors),
                 "tolerance": tolerance},
        produced_by=produced_by,
    )
