"""Judging as plain functions: the rule floor, reference checks, ranking and pools."""

from __future__ import annotations

import hashlib
import json
import re

from distillery import ids
from distillery.events import (CandidateGenerated, CandidatesJudged, JudgedCandidate, RegenerationRequested,
                               SourceOffset, Task, Trace)
from distillery.scoring import check_reference, parse_tool_calls
from distillery.spec import CapabilitySpec, Rules, UnitSpec

# A reference match outweighs the rule floor: a polite wrong answer must not outrank a terse right one.
REFERENCE_WEIGHT = 0.6
RULES_WEIGHT = 0.4


def judge_version(spec: CapabilitySpec) -> str:
    """Names rubric, rules and judge together: the label plus a hash of what decides a verdict."""
    decisive = {
        "judge": spec.judge.model_dump(mode="json", exclude={"aggregation_timeout_s"}),  # tuning, not judging
        "units": {name: u.rules.model_dump(mode="json") for name, u in sorted(spec.units.items())},
        "code": "rules-v1",  # bump when the pool policy below changes meaning
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.judge.label}-{digest}"


def with_label(spec: CapabilitySpec, label: str | None) -> CapabilitySpec:
    """The spec under another judge label (a replay names its version without editing the file)."""
    if not label:
        return spec
    return spec.model_copy(update={"judge": spec.judge.model_copy(update={"label": label})})


def format_ok(text: str, output_format: str) -> bool:
    if output_format == "tool_call":
        return parse_tool_calls(text) is not None
    if output_format == "final_answer":
        return "####" in text and bool(re.search(r"####\s*-?[\d$.,]", text))
    return bool(text.strip())


def rule_floor(text: str, rules: Rules) -> dict[str, bool]:
    """Each named rule -> passed. The names become reason tags."""
    checks = {
        "format": format_ok(text, rules.output_format),
        "min_chars": len(text.strip()) >= rules.min_chars,
        "max_chars": len(text) <= rules.max_chars,
    }
    for field in rules.required_fields:
        checks[f"required:{field}"] = field in text
    for pattern in rules.forbidden_patterns:
        checks[f"forbidden:{pattern}"] = re.search(pattern, text, re.IGNORECASE) is None
    return checks


def judge_candidate(task: Task, cand: CandidateGenerated, rules: Rules, source: SourceOffset | None) -> JudgedCandidate:
    """Pool one candidate with its reasons (rank is set later by :func:`rank`)."""
    base = dict(
        candidate_id=cand.candidate_id, teacher_id=cand.teacher_id, text=cand.text, rank=0,
        usage=cand.usage, latency_s=cand.latency_s, source=source,
        # a chain's answer cost every step that led to it
        cost_usd=cand.cost_usd + sum(step.cost_usd for step in (cand.chain.prior if cand.chain else [])),
        chain_steps=cand.chain.prior if cand.chain else [],
        trajectory=cand.trajectory,
    )
    if cand.error:
        return JudgedCandidate(pool="failure", score=0.0, reasons=["teacher_error"], **base)
    rule_checks = rule_floor(cand.text, rules)
    if rules.require_tool_use:
        rule_checks["tool_used"] = any(step.error is None for step in cand.trajectory)
    ref = check_reference(task, cand.text, rules.reference)
    checks = {**rule_checks, **ref.checks}
    failed_rules = [name for name, ok in rule_checks.items() if not ok]
    rules_score = sum(rule_checks.values()) / len(rule_checks)
    if ref.correct is None:
        score = rules_score
    else:
        score = RULES_WEIGHT * rules_score + REFERENCE_WEIGHT * float(ref.correct)
    pool, reasons = _pool(cand, checks, failed_rules, ref.correct, ref.reasons, task)
    return JudgedCandidate(
        pool=pool, score=round(score, 4), reasons=reasons, checks=checks,
        final=ref.final, tool_calls=ref.tool_calls, **base,
    )


def _pool(cand, checks, failed_rules, correct, ref_reasons, task) -> tuple[str, list[str]]:
    truncated = cand.finish_reason == "length"
    if not checks["format"]:
        return "failure", ["broken_output"] + (["truncated"] if truncated else [])
    if failed_rules:
        return "discard", [f"rule:{name}" for name in failed_rules]
    if correct is False:
        return "discard", ref_reasons or ["reference_mismatch"]
    if correct and task.reference is not None and task.reference.no_call:
        return "refusal", ["no_call_correct"]
    if correct is None:
        return "train", ["rules_passed", "no_reference"]
    return "train", ["rules_passed", "reference_match"]


def apply_risk(jc: JudgedCandidate, unit: UnitSpec) -> JudgedCandidate:
    """Nothing from a high-risk unit reaches `train` on one signal alone."""
    if unit.risk != "high" or jc.pool != "train":
        return jc
    if unit.second_check == "review":
        return jc.model_copy(update={"pool": "review", "reasons": [*jc.reasons, "high_risk_review"]})
    if "reference_match" not in jc.reasons:  # the rule floor alone is one signal
        return jc.model_copy(update={"pool": "review", "reasons": [*jc.reasons, "high_risk_single_signal"]})
    return jc


def rank(judged: list[JudgedCandidate]) -> list[JudgedCandidate]:
    """Best first by score; ties broken deterministically by teacher then candidate id."""
    ordered = sorted(judged, key=lambda j: (-j.score, j.teacher_id, j.candidate_id))
    return [j.model_copy(update={"rank": i + 1}) for i, j in enumerate(ordered)]


def judge_task(
    task: Task,
    candidates: list[tuple[CandidateGenerated, SourceOffset | None]],
    expected: int,
    spec: CapabilitySpec,
    version: str,
    produced_by: str,
    attempt: int = 1,
) -> CandidatesJudged:
    unit = spec.units.get(task.unit)
    rules = unit.rules if unit else Rules()
    judged = [judge_candidate(task, cand, rules, src) for cand, src in candidates]
    judged = rank([apply_risk(jc, unit) for jc in judged] if unit else judged)
    return CandidatesJudged(
        verdict_id=ids.verdict_id_for(task.task_id, version, attempt),
        attempt=attempt,
        task=task,
        judge_version=version,
        candidates=judged,
        missing_candidates=max(0, expected - len(candidates)),
        produced_by=produced_by,
        trace=Trace(task_id=task.task_id, causation_id=candidates[0][0].event_id if candidates else None),
    )


ACCEPTED_POOLS = ("train", "refusal", "hard_case")


def regeneration_for(verdict: CandidatesJudged, spec: CapabilitySpec, produced_by: str) -> RegenerationRequested | None:
    """A bounded retry when no candidate of a training task was accepted; the reasons are the feedback.

    Held-out tasks are never retried: the teacher baseline is its first answer.
    """
    unit = spec.units.get(verdict.task.unit)
    if unit is None or verdict.task.split != "train" or verdict.attempt >= unit.max_attempts:
        return None
    if not verdict.candidates or any(jc.pool in ACCEPTED_POOLS for jc in verdict.candidates):
        return None
    reasons = list(dict.fromkeys(r for jc in verdict.candidates for r in jc.reasons))
    attempt = verdict.attempt + 1
    return RegenerationRequested(
        regeneration_id=ids.content_id("regen", verdict.task.task_id, verdict.judge_version, attempt),
        task=verdict.task,
        attempt=attempt,
        teachers=sorted({jc.teacher_id for jc in verdict.candidates}),
        feedback="The previous answer was rejected: " + ", ".join(reasons),
        verdict_id=verdict.verdict_id,
        produced_by=produced_by,
        trace=Trace(task_id=verdict.task.task_id, causation_id=verdict.event_id),
    )
