"""Judging as plain functions on events (docs/architecture.md §4, judge).

Layers, in order: (1) the rule floor and the reference check; (2) scores per declared
dimension, each recorded with the scorer that produced it; pools per candidate;
(3) multi-teacher relation; (4) self-checks (position swap, perturbation, two judges)
and the per-unit gate; (5) ranking. :func:`judge_batch` runs them over many tasks at
once so the model scorers see one batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from distillery.contracts import ids
from distillery.contracts.events import (
    ACCEPTED_POOLS,
    CORRECT_POOLS,
    CandidateGenerated,
    CandidatesJudged,
    JudgedCandidate,
    RegenerationRequested,
    SourceOffset,
    Task,
    Trace,
)
from distillery.contracts.spec import CapabilitySpec, Dimension, Rules, UnitSpec
from distillery.domain.checkers import parse_json_answer, run_checker
from distillery.domain.scoring import ReferenceResult, parse_tool_calls
from distillery_judge.relation import relate
from distillery_judge.scorers import (
    Embedder,
    ModelJudge,
    PairRequest,
    ScoreRequest,
    Scorers,
    reference_text,
    strip_judge_directives,
)
from distillery_judge.selfcheck import SelfCheckMonitor, check_of, perturb, sampled

_MARKED_NUMBER = re.compile(r"####\s*-?[\d$.,]")


def format_ok(text: str, output_format: str) -> bool:
    if output_format == "tool_call":
        return parse_tool_calls(text) is not None
    if output_format == "final_answer":
        return "####" in text and bool(_MARKED_NUMBER.search(text))
    if output_format == "json":
        return parse_json_answer(text) is not None
    return bool(text.strip())


_JSON_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list, "object": dict}


def _json_type_ok(value: object, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("number", "integer"):
        return False
    return isinstance(value, _JSON_TYPES[kind])


def rule_floor(text: str, rules: Rules) -> dict[str, bool]:
    """Each named rule -> passed. The names become reason tags."""
    checks = {
        "format": format_ok(text, rules.output_format),
        "min_chars": len(text.strip()) >= rules.min_chars,
        "max_chars": len(text) <= rules.max_chars,
    }
    obj = parse_json_answer(text) if rules.output_format == "json" else None
    for name in rules.required_fields:
        checks[f"required:{name}"] = name in obj if isinstance(obj, dict) else name in text
    for key, kind in rules.json_schema.items():
        checks[f"schema:{key}"] = isinstance(obj, dict) and key in obj and _json_type_ok(obj[key], kind)
    for pattern in rules.forbidden_patterns:
        checks[f"forbidden:{pattern}"] = re.search(pattern, text, re.IGNORECASE) is None
    return checks


# --- layers 1 and 2: floor, dimensions, pool -------------------------------------------------


@dataclass
class Assessed:
    """One candidate after the floor and the scorers, before task-level decisions."""

    jc: JudgedCandidate
    correct: bool | None
    directive: bool = False
    two_judges_agree: bool | None = None  # None: no second judge, or nothing it could score


@dataclass
class _Floor:
    task: Task
    unit: UnitSpec
    cand: CandidateGenerated
    source: SourceOffset | None
    rule_checks: dict[str, bool]
    ref: ReferenceResult
    directive: bool
    dims: dict[str, float] = field(default_factory=dict)
    scorers: dict[str, str] = field(default_factory=dict)
    judge_raw: str | None = None
    second_pass: bool | None = None

    @property
    def scoreable(self) -> bool:
        return not self.cand.error and self.rule_checks["format"]


def _floor(task: Task, unit: UnitSpec, cand: CandidateGenerated, source: SourceOffset | None) -> _Floor:
    rule_checks = rule_floor(cand.text, unit.rules) if not cand.error else {"format": False}
    if unit.rules.require_tool_use and not cand.error:
        rule_checks["tool_used"] = any(step.error is None for step in cand.trajectory)
    ref = run_checker(unit, task, cand.text) if not cand.error else ReferenceResult(None)
    return _Floor(task, unit, cand, source, rule_checks, ref, strip_judge_directives(cand.text)[1])


def _local_dimensions(f: _Floor) -> None:
    """Dimensions scored without a model: the rule floor and the reference."""
    for dim in f.unit.judge.dimensions:
        if dim.scorer == "rules":
            f.dims[dim.name] = sum(f.rule_checks.values()) / len(f.rule_checks)
            f.scorers[dim.name] = "rules"
        elif dim.scorer == "reference" and f.ref.correct is not None:
            # partial credit where the checker gives it (json_fields: the share of fields right)
            f.dims[dim.name] = f.ref.score if f.ref.score is not None else float(f.ref.correct)
            f.scorers[dim.name] = f"reference:{f.unit.reference_checker.name}"


def _embedding_dimensions(floors: list[_Floor], embedder: Embedder | None) -> None:
    wanted = []
    for f in floors:
        for dim in f.unit.judge.dimensions:
            if dim.scorer != "embedding" or not f.scoreable:
                continue
            anchor = f.task.prompt if dim.against == "prompt" else reference_text(f.task, f.unit)
            if anchor is not None:  # no reference: the dimension is left out, the others carry the score
                wanted.append((f, dim, anchor))
    if not wanted or embedder is None:
        return
    sims = embedder.similarity([(f.cand.text, anchor) for f, _, anchor in wanted])
    for (f, dim, _), sim in zip(wanted, sims):
        f.dims[dim.name] = round(sim, 4)
        f.scorers[dim.name] = embedder.scorer_id


def _llm_dims(unit: UnitSpec) -> list[Dimension]:
    return [d for d in unit.judge.dimensions if d.scorer == "llm"]


def _llm_dimensions(floors: list[_Floor], scorers: Scorers) -> None:
    todo = [f for f in floors if f.scoreable and _llm_dims(f.unit)]
    if not todo or scorers.model is None:
        return
    requests = [ScoreRequest(f.cand.candidate_id, f.task, f.cand.text, _llm_dims(f.unit), f.unit) for f in todo]
    for f, result in zip(todo, scorers.model.score(requests)):
        if result.scores is None:
            f.judge_raw = result.raw
            continue
        for name, value in result.scores.items():
            f.dims[name] = value
            f.scorers[name] = scorers.model.scorer_id
    if scorers.second is None:
        return
    for f, result in zip(todo, scorers.second.score(requests)):
        if result.scores is not None and f.judge_raw is None:
            f.second_pass = _llm_passes(f.unit, result.scores)


def _llm_passes(unit: UnitSpec, scores: dict[str, float]) -> bool:
    return all(scores[d.name] >= d.threshold for d in _llm_dims(unit))


def weighted_score(dims: dict[str, float], unit: UnitSpec) -> float:
    """The unit's weighted mean over the dimensions that were scored."""
    weights = {d.name: d.weight for d in unit.judge.dimensions if d.name in dims}
    total = sum(weights.values())
    return sum(dims[n] * w for n, w in weights.items()) / total if total else 0.0


def _pool(f: _Floor) -> tuple[str, list[str]]:
    """One candidate's pool and reasons from its own evidence (task-level rules come later)."""
    if f.cand.error:
        return "failure", ["teacher_error"]
    if not f.rule_checks["format"]:
        return "failure", ["broken_output"] + (["truncated"] if f.cand.finish_reason == "length" else [])
    if f.judge_raw is not None:
        return "failure", ["judge_malformed"]
    broken_checker = [r for r in f.ref.reasons if r.startswith("checker_error:")]
    if broken_checker:  # the checker raised on this answer: nobody knows whether it is right
        return "failure", broken_checker
    failed = [f"rule:{name}" for name, ok in f.rule_checks.items() if not ok]
    if failed:
        return "discard", failed
    if f.ref.correct is False:
        return "discard", f.ref.reasons or ["reference_mismatch"]
    if f.ref.checks.get("tool_call_valid") is False:  # an undeclared function or wrong arguments, with or
        return "discard", f.ref.reasons  # without a reference: never a call the student learns to make
    low = [f"low:{d.name}" for d in f.unit.judge.dimensions if d.name in f.dims and f.dims[d.name] < d.threshold]
    if low:  # the reference says right but a scorer disagrees: the judge is split
        return ("hard_case", ["judge_split", *low]) if f.ref.correct else ("discard", low)
    if f.ref.correct and f.task.reference is not None and f.task.reference.no_call:
        return "refusal", ["no_call_correct"]
    if f.ref.correct and f.ref.gaps:  # says "not stated" where the input lacks a required detail
        return "refusal", [f"missing_stated:{name}" for name in f.ref.gaps]
    confidence = f.cand.confidence
    if confidence is not None and confidence < f.unit.judge.hard_case_confidence:
        return "hard_case", ["rules_passed", "low_confidence"]
    return "train", ["rules_passed", "no_reference" if f.ref.correct is None else "reference_match"]


def _judged(f: _Floor) -> Assessed:
    pool, reasons = _pool(f)
    cand = f.cand
    score = 0.0 if pool == "failure" else weighted_score(f.dims, f.unit)
    jc = JudgedCandidate(
        candidate_id=cand.candidate_id, teacher_id=cand.teacher_id, text=cand.text, pool=pool, rank=0,
        score=round(score, 4), reasons=reasons, checks={**f.rule_checks, **f.ref.checks},
        final=f.ref.final, tool_calls=f.ref.tool_calls, usage=cand.usage, latency_s=cand.latency_s,
        # a chain's answer cost every step that led to it
        cost_usd=cand.cost_usd + sum(step.cost_usd for step in (cand.chain.prior if cand.chain else [])),
        source=f.source, chain_steps=cand.chain.prior if cand.chain else [], trajectory=cand.trajectory,
        dimensions=f.dims, scorers=f.scorers, confidence=cand.confidence, judge_raw=f.judge_raw,
    )
    agree = None
    if f.second_pass is not None and pool != "failure":
        agree = f.second_pass == _llm_passes(f.unit, f.dims)
    return Assessed(jc, f.ref.correct, f.directive, agree)


def assess(items: list[tuple[Task, UnitSpec, CandidateGenerated, SourceOffset | None]], scorers: Scorers) -> list[Assessed]:
    """Floor, dimensions and pool for many candidates; the model scorers run once, batched."""
    floors = [_floor(*item) for item in items]
    for f in floors:
        _local_dimensions(f)
    _embedding_dimensions(floors, scorers.embedder)
    _llm_dimensions(floors, scorers)
    return [_judged(f) for f in floors]


def judge_candidate(task: Task, cand: CandidateGenerated, unit: UnitSpec, source: SourceOffset | None = None,
                    scorers: Scorers | None = None) -> JudgedCandidate:
    """One candidate on its own evidence (no peers, no self-checks): floor, scores, pool."""
    return assess([(task, unit, cand, source)], scorers or Scorers())[0].jc


# --- task-level decisions ----------------------------------------------------------------------


def _moved(jc: JudgedCandidate, pool: str, *reasons: str) -> JudgedCandidate:
    return jc.model_copy(update={"pool": pool, "reasons": [*jc.reasons, *reasons]})


def _to_review(judged: list[JudgedCandidate], reason: str, pools=CORRECT_POOLS) -> list[JudgedCandidate]:
    return [_moved(jc, "review", reason) if jc.pool in pools else jc for jc in judged]


def add_corrections(task: Task, assessed: list[Assessed], unit: UnitSpec) -> list[JudgedCandidate]:
    """Wrong answers (a reference mismatch) become `contrastive`, kept against the reference."""
    out = []
    fix = reference_text(task, unit)
    for a in assessed:
        jc = a.jc
        if unit.judge.contrastive and a.correct is False and jc.pool == "discard" and fix is not None:
            jc = jc.model_copy(update={"pool": "contrastive", "correction": fix,
                                       "reasons": [*jc.reasons, "correction:reference"]})
        out.append(jc)
    return out


def apply_risk(jc: JudgedCandidate, unit: UnitSpec) -> JudgedCandidate:
    """Nothing from a high-risk unit reaches `train` on one signal alone."""
    if unit.risk != "high" or jc.pool != "train":
        return jc
    if unit.second_check == "review":
        return _moved(jc, "review", "high_risk_review")
    if "reference_match" not in jc.reasons:  # the rule floor alone is one signal
        return _moved(jc, "review", "high_risk_single_signal")
    return jc


def apply_relation(task: Task, judged: list[JudgedCandidate], unit: UnitSpec) -> tuple[list[JudgedCandidate], object]:
    relation = relate(task, judged, unit)
    if relation.kind == "conflict" and unit.risk == "high":
        judged = _to_review(judged, "teacher_conflict:" + relation.reasons[0].split(":")[0])
    elif relation.kind == "complement" and unit.judge.keep_complements:
        judged = _with_evidence(judged, relation.extra)
    return judged, relation


def _with_evidence(judged: list[JudgedCandidate], extra: dict[str, list[str]]) -> list[JudgedCandidate]:
    """The best accepted candidate carries what the other teachers added, attributed."""
    accepted = sorted((jc for jc in judged if jc.pool in ACCEPTED_POOLS), key=_rank_key)
    if not accepted:
        return judged
    best = accepted[0]
    by_teacher = {jc.candidate_id: jc.teacher_id for jc in judged}
    evidence = [f"{by_teacher[cid]}: {c}" for cid, cs in sorted(extra.items()) if cid != best.candidate_id for c in cs]
    return [jc.model_copy(update={"evidence": evidence}) if jc.candidate_id == best.candidate_id else jc
            for jc in judged]


def _rank_key(jc: JudgedCandidate) -> tuple:
    return (-jc.score, jc.teacher_id, jc.candidate_id)


def rank(judged: list[JudgedCandidate]) -> list[JudgedCandidate]:
    """Best first by weighted score; ties broken deterministically by teacher then candidate id."""
    return [j.model_copy(update={"rank": i + 1}) for i, j in enumerate(sorted(judged, key=_rank_key))]


# --- layer 4: self-checks ----------------------------------------------------------------------


def position_swap(tasks: list[tuple[Task, list[JudgedCandidate]]], model: ModelJudge) -> list[bool | None]:
    """Per task, whether the pairwise judgment of its two best accepted candidates survives swapping
    their order (None: fewer than two to compare). Both orders run in one batch."""
    pairs, owners = [], []
    for i, (task, judged) in enumerate(tasks):
        top = sorted((jc for jc in judged if jc.pool in CORRECT_POOLS), key=_rank_key)[:2]
        if len(top) == 2:
            a, b = top
            key = f"pair:{a.candidate_id}:{b.candidate_id}"
            pairs += [PairRequest(key, task, a.text, b.text), PairRequest(key + ":swapped", task, b.text, a.text)]
            owners.append(i)
    results: list[bool | None] = [None] * len(tasks)
    choices = model.compare(pairs) if pairs else []
    for n, i in enumerate(owners):
        forward, backward = choices[2 * n], choices[2 * n + 1]
        swapped_back = {"A": "B", "B": "A", "tie": "tie"}.get(backward) if backward else None
        results[i] = forward is not None and forward == swapped_back
    return results


def perturbation_checks(
    tasks: list[tuple[Task, UnitSpec, list[JudgedCandidate], list[tuple[CandidateGenerated, SourceOffset | None]]]],
    scorers: Scorers,
) -> list[bool | None]:
    """Per task, whether a sampled accepted answer with a planted error was failed (None: not sampled)."""
    variants, owners = [], []
    for i, (task, unit, judged, cands) in enumerate(tasks):
        rate = unit.judge.self_checks.perturbation_rate
        by_id = {c.candidate_id: c for c, _ in cands}
        for jc in judged:
            if jc.pool in CORRECT_POOLS and sampled(jc.candidate_id, rate):
                text = perturb(jc.text, unit.output_form)
                if text is not None:
                    variant = by_id[jc.candidate_id].model_copy(
                        update={"text": text, "candidate_id": jc.candidate_id + "~perturbed"})
                    variants.append((task, unit, variant, None))
                    owners.append(i)
                break  # one variant per task keeps the cost bounded
    results: list[bool | None] = [None] * len(tasks)
    for i, a in zip(owners, assess(variants, scorers) if variants else []):
        results[i] = a.jc.pool not in ACCEPTED_POOLS
    return results


# --- a batch of tasks --------------------------------------------------------------------------


@dataclass
class TaskInput:
    """A task whose candidates are all in (or whose wait timed out)."""

    task: Task
    candidates: list[tuple[CandidateGenerated, SourceOffset | None]]
    expected: int
    attempt: int = 1


def judge_batch(
    inputs: list[TaskInput],
    spec: CapabilitySpec,
    version: str,
    produced_by: str,
    scorers: Scorers | None = None,
    monitor: SelfCheckMonitor | None = None,
) -> list[CandidatesJudged]:
    """Verdicts for many tasks; every task's unit must be in the spec (the wiring dead-letters others)."""
    scorers = scorers or Scorers()
    monitor = monitor or SelfCheckMonitor(spec)
    items = [(ti.task, spec.units[ti.task.unit], cand, src) for ti in inputs for cand, src in ti.candidates]
    assessed_all = assess(items, scorers)
    per_task: list[list[Assessed]] = []
    start = 0
    for ti in inputs:
        per_task.append(assessed_all[start:start + len(ti.candidates)])
        start += len(ti.candidates)

    staged = []
    for ti, assessed in zip(inputs, per_task):
        unit = spec.units[ti.task.unit]
        judged = add_corrections(ti.task, assessed, unit)
        judged = [_moved(jc, "review", "judge_directive") if a.directive and jc.pool in CORRECT_POOLS else jc
                  for a, jc in zip(assessed, judged)]
        judged = [apply_risk(jc, unit) for jc in judged]
        judged, relation = apply_relation(ti.task, judged, unit)
        staged.append((ti, unit, assessed, judged, relation))

    swaps = [None] * len(staged)
    swap_idx = [i for i, (_, unit, *_rest) in enumerate(staged) if unit.judge.self_checks.position_swap]
    if swap_idx and scorers.model is not None:
        found = position_swap([(staged[i][0].task, staged[i][3]) for i in swap_idx], scorers.model)
        for i, ok in zip(swap_idx, found):
            swaps[i] = ok
    caught = perturbation_checks([(ti.task, unit, judged, ti.candidates) for ti, unit, _, judged, _ in staged], scorers)

    verdicts = []
    for (ti, _unit, assessed, judged, relation), swap_ok, caught_ok in zip(staged, swaps, caught):
        checks = _self_checks(swap_ok, caught_ok, [a.two_judges_agree for a in assessed])
        for check, ok in checks.items():
            monitor.record(ti.task.unit, check_of(check), ok)
        if checks.get("position_swap_agree") is False:
            judged = _to_review(judged, "position_swap_disagreement")
        if checks.get("two_judge_agree") is False:
            judged = [_moved(jc, "hard_case", "judges_split") if jc.pool == "train" else jc for jc in judged]
        if monitor.gate_closed(ti.task.unit):
            judged = _to_review(judged, "judge_agreement_low", pools=("train",))
        verdicts.append(_verdict(ti, rank(judged), relation, checks, version, produced_by))
    return verdicts


def shadow_verdicts(shadows: list[tuple[CandidateGenerated, SourceOffset | None]], spec: CapabilitySpec, version: str,
                    produced_by: str, scorers: Scorers | None = None) -> list[CandidatesJudged]:
    """A promoted student's live answers, each judged alone with the same floor, checker and scorers
    as a teacher's, and tagged ``shadow``: no relation to the teachers' answers, no self-check
    window, no regeneration, and never a sample (the editor passes over it). Its id derives from the
    candidate, so a redelivery repeats it."""
    inputs = [TaskInput(cand.task, [(cand, source)], 1, cand.attempt) for cand, source in shadows]
    verdicts = judge_batch(inputs, spec, version, produced_by, scorers, SelfCheckMonitor(spec))
    return [CandidatesJudged.model_validate({
        **v.model_dump(), "verdict_id": ids.content_id("shadow", cand.candidate_id, version), "event_id": "",
        "shadow": True, "self_checks": {}})
        for (cand, _), v in zip(shadows, verdicts, strict=True)]


def _self_checks(swap_ok: bool | None, caught_ok: bool | None, two: list[bool | None]) -> dict[str, bool]:
    checks = {}
    if swap_ok is not None:
        checks["position_swap_agree"] = swap_ok
    if caught_ok is not None:
        checks["perturbation_caught"] = caught_ok
    seen = [x for x in two if x is not None]
    if seen:
        checks["two_judge_agree"] = all(seen)
    return checks


def _verdict(ti: TaskInput, judged: list[JudgedCandidate], relation, checks: dict[str, bool], version: str,
             produced_by: str) -> CandidatesJudged:
    return CandidatesJudged(
        verdict_id=ids.verdict_id_for(ti.task.task_id, version, ti.attempt),
        attempt=ti.attempt,
        task=ti.task,
        judge_version=version,
        candidates=judged,
        missing_candidates=max(0, ti.expected - len(ti.candidates)),
        relation=relation.kind,
        relation_reasons=relation.reasons,
        self_checks=checks,
        produced_by=produced_by,
        trace=Trace(task_id=ti.task.task_id, causation_id=ti.candidates[0][0].event_id if ti.candidates else None),
    )


def judge_task(
    task: Task,
    candidates: list[tuple[CandidateGenerated, SourceOffset | None]],
    expected: int,
    spec: CapabilitySpec,
    version: str,
    produced_by: str,
    attempt: int = 1,
    scorers: Scorers | None = None,
    monitor: SelfCheckMonitor | None = None,
) -> CandidatesJudged:
    """The verdict for one task (see :func:`judge_batch`)."""
    return judge_batch([TaskInput(task, candidates, expected, attempt)], spec, version, produced_by, scorers, monitor)[0]


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
