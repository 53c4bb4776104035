"""Representation mapping as plain functions: a verdict in, samples out (docs/architecture.md §4, editor).

Each accepted candidate becomes one sample per pathway of its unit, so an ablation can drop one:
``answer`` (the final answer only), ``process`` (plus the key steps, compressed), ``style``
(the final answer checked and tidied against the unit's style constraints, which the sample
keeps), ``tool_trajectory`` (trigger, tool, arguments, observation, recovery; closure in
``final``). Boundary pools are training material too: ``refusal`` samples say what was missing,
why to stop and what to do instead; ``contrastive`` samples keep the wrong answer beside the
correction and the reason. Which samples stay in the repository (dedup, clusters, judge replays,
human review) is :mod:`distillery_editor.governance`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from distillery.contracts import ids
from distillery.contracts.events import (
    SAMPLE_POOLS,
    CandidatesJudged,
    JudgedCandidate,
    Provenance,
    SampleCurated,
    SourceOffset,
    Task,
    Trace,
)
from distillery.contracts.spec import CapabilitySpec, StyleSpec, UnitSpec
from distillery.domain.checkers import canonical_answer, parse_json_answer
from distillery.domain.samples import CONTRASTIVE_PATHWAY, hashed_tool_names, sample_weight
from distillery.domain.text import FILLER_PHRASE, sentences
from distillery.domain.tokens import count_tokens
from distillery.domain.tools import REGISTRY
from distillery_editor.compress import compress

# Pools that become training material.
CURATED_POOLS = SAMPLE_POOLS
# Reason tags of candidates whose pool a human set (governance.apply_decisions adds them).
HUMAN_ACCEPT = "human_accept"
HUMAN_REJECT = "human_reject"
# The learnable boundary behaviour: decline to call, say why. Teachers phrase it in many
# ways (or answer from memory); the sample keeps one canonical form and the why in `limits`.
REFUSAL = "None of the available functions can do this, so I will not call any."
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")


def final_text(jc: JudgedCandidate, unit: UnitSpec) -> str:
    """The final answer in the unit's output form, canonicalised."""
    if jc.pool == "refusal" and not stated_gaps(jc):
        return REFUSAL  # a structured answer that leaves a gap open keeps its own (null) fields
    if jc.pool == "contrastive" and jc.correction:
        return jc.correction
    return answer_of(jc, unit)


def answer_of(jc: JudgedCandidate, unit: UnitSpec) -> str:
    """What the candidate itself answered, canonicalised (a contrastive sample's wrong side)."""
    if unit.output_form == "tool_call" and jc.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in jc.tool_calls]
        return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
    if unit.output_form == "final_answer" and jc.final is not None:
        return f"#### {jc.final}"
    if unit.output_form == "json" and (obj := parse_json_answer(jc.text)) is not None:
        return canonical_answer(obj, unit)
    return jc.text.strip()


# --- boundary annotations ------------------------------------------------------------------------


def stated_gaps(jc: JudgedCandidate) -> list[str]:
    """The required fields the input lacked and the answer left "not stated" (the judge's reasons)."""
    return [r.split(":", 1)[1] for r in jc.reasons if r.startswith("missing_stated:")]


def refusal_limits(task: Task, jc: JudgedCandidate | None = None, unit: UnitSpec | None = None) -> list[str]:
    """What was missing, why answering stops, what to do instead. A missing detail's boundary names
    the fields and carries the unit's must-nots; the tool boundary keeps its fixed wording."""
    gaps = stated_gaps(jc) if jc is not None else []
    if gaps:
        fields = ", ".join(gaps)
        return [f"Missing: the input does not state {fields}.",
                "Why stop: any value there would be invented, not read from the input.",
                f"Instead: leave {fields} null (not stated) and ask for it.",
                *[f"Must not: {line}." for line in (unit.must_not if unit else [])]]
    names = ", ".join(t.name for t in task.tools) or "none"
    return [f"Missing: no declared function fits this request (declared: {names}).",
            "Why stop: calling a function that does not fit, or answering from memory, would be made up.",
            "Instead: call no function, say so, and name the information or tool that would be needed."]


def contrastive_limits(jc: JudgedCandidate) -> list[str]:
    reasons = [r for r in jc.reasons if not r.startswith("correction:")]
    return [f"Wrong because: {', '.join(reasons) or 'it does not match the reference'}.",
            "Correct: the answer in `final`, not the one in `contrast`."]


# --- pathways --------------------------------------------------------------------------------------


def style_final(final: str, style: StyleSpec) -> tuple[str, list[str]]:
    """The final answer tidied to the style constraints where that is safe, and what still breaks them.

    Safe: removing forbidden phrases, filler, exclamation marks and emoji for a plain or formal tone.
    Never safe: cutting sentences or characters (that is content), adding a required phrase.
    """
    text = final
    for phrase in style.forbidden_phrases:
        text = re.sub(re.escape(phrase), "", text, flags=re.IGNORECASE)
    if style.tone != "any":
        text = _EMOJI.sub("", FILLER_PHRASE.sub("", text)).replace("!", ".")
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    broken = [f"missing phrase '{p}'" for p in style.required_phrases if p.lower() not in text.lower()]
    if style.max_chars and len(text) > style.max_chars:
        broken.append(f"{len(text)} characters > {style.max_chars}")
    if style.max_sentences and len(sentences(text)) > style.max_sentences:
        broken.append(f"{len(sentences(text))} sentences > {style.max_sentences}")
    return text, broken


def trajectory_steps(jc: JudgedCandidate) -> list[dict]:
    """Trigger condition, tool, arguments, observation, and the recovery step after a failed call."""
    steps = []
    for i, step in enumerate(jc.trajectory):
        tool = REGISTRY.get(step.tool)
        entry = {
            "trigger": f"needs {tool.description[0].lower() + tool.description[1:]}" if tool else f"calls {step.tool}",
            "tool": step.tool, "arguments": step.arguments, "observation": step.observation, "error": step.error,
        }
        if i > 0 and jc.trajectory[i - 1].error:
            entry["recovery_of"] = i - 1  # this call repairs the failed one before it
        steps.append(entry)
    return steps


def unparseable(jc: JudgedCandidate, unit: UnitSpec) -> str | None:
    """Why an accepted answer does not parse in the unit's output form (a human must look), if it does not."""
    if jc.pool not in ("train", "hard_case"):
        return None  # refusals and contrasts are written by the editor, not parsed
    if unit.output_form == "tool_call" and not jc.tool_calls:
        return "unparseable: no tool call in the answer of a tool_call unit"
    if unit.output_form == "final_answer" and jc.final is None and unit.rules.reference == "final_answer":
        return "unparseable: no final answer in the answer of a final_answer unit"
    if unit.output_form == "json" and parse_json_answer(jc.text) is None:
        return "unparseable: no JSON object in the answer of a json unit"
    return None


def call_steps(jc: JudgedCandidate) -> list[dict]:
    return [{"tool": c.name, "arguments": c.arguments} for c in jc.tool_calls or []]


# --- one sample ------------------------------------------------------------------------------------


def tier_of(confidence: float, unit: UnitSpec) -> str:
    tiers = unit.editor.tiers
    if confidence >= tiers.high:
        return "high"
    return "medium" if confidence >= tiers.medium else "low"


def sample_confidence(jc: JudgedCandidate) -> float:
    """The judge's score, discounted by the teacher's own confidence where it had one."""
    return round(jc.score * (jc.confidence if jc.confidence is not None else 1.0), 4)


def tiered_pool(pool: str, tier: str, unit: UnitSpec) -> str:
    """A would-be `train` sample of a lower tier goes where the spec sends that tier."""
    if pool != "train" or tier == "high":
        return pool
    return unit.editor.tiers.medium_pool if tier == "medium" else unit.editor.tiers.low_pool


def sample_metadata(task_metadata: dict[str, str], jc: JudgedCandidate, extra: dict[str, str]) -> dict[str, str]:
    """The task's metadata, who chose the pool when a human did, and why a sample went to review."""
    decided = {"decided_by": "human"} if HUMAN_ACCEPT in jc.reasons else {}
    return {**task_metadata, **decided, **extra}


def build_sample(verdict: CandidatesJudged, jc: JudgedCandidate, unit: UnitSpec, pathway: str, source: SourceOffset,
                 produced_by: str, tokens: Callable[[str], int]) -> SampleCurated | None:
    """The sample of one candidate on one pathway (None: the pathway has nothing to teach here)."""
    task = verdict.task
    if jc.pool == "contrastive" and pathway != CONTRASTIVE_PATHWAY:
        return None  # the wrong answer's steps or style would teach the wrong thing: one contrast, on `answer`
    final = final_text(jc, unit)
    rationale, limits, steps, style_constraints, notes = "", [], call_steps(jc), [], {}
    if pathway == "process":
        compressed = compress(jc.text, final, unit.editor.max_rationale_lines)
        if not compressed.rationale:
            return None  # nothing to teach beyond the answer pathway
        rationale, limits = compressed.rationale, compressed.limits
    elif pathway == "style":
        final, broken = style_final(final, unit.editor.style)
        style_constraints = unit.editor.style.constraints()
        if broken:
            notes["review_reason"] = "style: " + "; ".join(broken)
    elif pathway == "tool_trajectory":
        if not jc.trajectory:
            return None  # no trajectory to learn from
        steps = trajectory_steps(jc)
    unparsed = unparseable(jc, unit)
    if unparsed:
        notes["review_reason"] = unparsed
    if jc.pool == "refusal":
        limits = refusal_limits(task, jc, unit) + limits
    contrast = ""
    if jc.pool == "contrastive":
        contrast, limits = answer_of(jc, unit), contrastive_limits(jc) + limits
        if not jc.correction:  # e.g. a human put it here: without the right answer there is nothing to contrast
            notes["unusable"] = "contrastive without a correction"
    limits_text = "\n".join(dict.fromkeys(limits))
    confidence = sample_confidence(jc)
    tier = tier_of(confidence, unit)
    human = HUMAN_ACCEPT in jc.reasons
    pool = jc.pool if human else tiered_pool(jc.pool, tier, unit)  # a human's pool is final
    if pool == "review" and jc.pool != "review":
        notes["review_reason"] = f"{tier} tier: confidence {confidence}"
    before = tokens(jc.text)
    # what the student learns to write: the fields, and the steps where they are the lesson
    target = [rationale, limits_text, final] + ([json.dumps(steps)] if pathway == "tool_trajectory" else [])
    after = tokens("\n".join(x for x in target if x))
    if after > unit.editor.token_budget:  # never truncated silently: a human decides
        notes["review_reason"] = f"over token budget: {after} > {unit.editor.token_budget}"
    pool, notes = review_routing(pool, notes, human)
    return SampleCurated(
        sample_id=ids.sample_id_for(jc.candidate_id, verdict.judge_version, pathway),
        unit=task.unit, pathway=pathway, pool=pool, prompt=task.prompt, final=final, rationale=rationale,
        limits=limits_text, evidence=jc.evidence, tool_steps=steps, tools=task.tools,
        weight=sample_weight(pool, unit),
        content_hash=ids.sample_content_hash(task.unit, pathway, hashed_tool_names(task.tools, unit),
                                             task.prompt, final, rationale, limits_text, steps, contrast),
        provenance=Provenance(task_id=task.task_id, candidate_id=jc.candidate_id, teacher_id=jc.teacher_id,
                              judge_version=verdict.judge_version, verdict_id=verdict.verdict_id, source=source),
        metadata=sample_metadata(task.metadata, jc, notes),
        score=jc.score, confidence=jc.confidence, tier=tier, tokens_before=before, tokens_after=after,
        style_constraints=style_constraints, contrast=contrast,
        produced_by=produced_by, trace=Trace(task_id=task.task_id, causation_id=verdict.event_id),
    )


def review_routing(pool: str, notes: dict[str, str], human: bool) -> tuple[str, dict[str, str]]:
    """A sample the editor has doubts about goes to ``review``, where a human decides; once a human
    accepted it, the doubt is kept as a note and the human's pool stands (a contrast without its
    correction teaches nothing, so it waits for one whoever chose it)."""
    if "unusable" in notes:
        notes = {k: v for k, v in notes.items() if k != "unusable"}
        return "review", {**notes, "review_reason": "contrastive without a correction"}
    if "review_reason" not in notes:
        return pool, notes
    if human:
        reason = notes["review_reason"]
        return pool, {**{k: v for k, v in notes.items() if k != "review_reason"}, "review_overridden": reason}
    return "review", notes


def best_per_pool(verdict: CandidatesJudged) -> list[JudgedCandidate]:
    """The top-ranked candidate of each curated pool: one clear target per task and pool."""
    chosen: dict[str, JudgedCandidate] = {}
    for jc in sorted(verdict.candidates, key=lambda c: c.rank):
        if jc.pool in CURATED_POOLS and jc.pool not in chosen:
            chosen[jc.pool] = jc
    return list(chosen.values())


def curate(verdict: CandidatesJudged, source: SourceOffset, spec: CapabilitySpec, produced_by: str,
           tokens: Callable[[str], int] = count_tokens) -> list[SampleCurated]:
    """Samples for one verdict: one per curated pool and pathway; held-out (eval) tasks never become samples."""
    unit = spec.units.get(verdict.task.unit)
    if verdict.task.split == "eval" or unit is None:
        return []
    built = (build_sample(verdict, jc, unit, pathway, source, produced_by, tokens)
             for jc in best_per_pool(verdict) for pathway in unit.pathways)
    return [sample for sample in built if sample is not None]
