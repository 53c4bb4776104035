"""Judging as plain functions: the rule floor, reference checks, ranking and pools."""

from __future__ import annotations

import hashlib
import json
import re

from distillery import ids
from distillery.events import CandidateGenerated, CandidatesJudged, JudgedCandidate, SourceOffset, Task, Trace
from distillery.scoring import check_reference, parse_tool_calls
from distillery.spec import CapabilitySpec, Rules

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
        usage=cand.usage, latency_s=cand.latency_s, cost_usd=cand.cost_usd, source=source,
    )
    if cand.error:
        return JudgedCandidate(pool="failure", score=0.0, reasons=["teacher_error"], **base)
    rule_checks = rule_floor(cand.text, rules)
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
) -> CandidatesJudged:
    rules = spec.units[task.unit].rules if task.unit in spec.units else Rules()
    judged = rank([judge_candidate(task, cand, rules, src) for cand, src in candidates])
    return CandidatesJudged(
        verdict_id=ids.verdict_id_for(task.task_id, version),
        task=task,
        judge_version=version,
        candidates=judged,
        missing_candidates=max(0, expected - len(candidates)),
        produced_by=produced_by,
        trace=Trace(task_id=task.task_id, causation_id=candidates[0][0].event_id if candidates else None),
    )
