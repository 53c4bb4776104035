"""Representation mapping as plain functions: a verdict in, samples out.

The ``answer`` pathway keeps the final answer only; ``process`` adds the key steps
compressed to a skeleton. Refusal samples carry an explicit boundary in ``limits``.
Which samples stay in the repository (dedup, judge replays, human review) is
:mod:`distillery_editor.state` and :mod:`distillery_editor.governance`.
"""

from __future__ import annotations

import json
import re

from distillery import ids
from distillery.events import (SAMPLE_POOLS, CandidatesJudged, JudgedCandidate, Provenance, SampleCurated,
                               SourceOffset, Trace)
from distillery.spec import CapabilitySpec, UnitSpec

# Pools that become training material in this version of the editor.
CURATED_POOLS = SAMPLE_POOLS
# Reason tags of candidates whose pool a human set (governance.apply_decisions adds them).
HUMAN_ACCEPT = "human_accept"
HUMAN_REJECT = "human_reject"

# Openers and sign-offs that carry no step of the solution.
_FILLER = re.compile(
    r"^(sure|certainly|of course|great|okay|ok|alright|let's|let me|here is|here's|i hope|hope this|"
    r"to solve this|we need to|first,? let's|in conclusion|therefore,? the answer)\b",
    re.IGNORECASE,
)
_ARITHMETIC = re.compile(r"\d|=")  # an opener followed by a computation is a step, not filler
MAX_RATIONALE_LINES = 8
# The learnable boundary behaviour: decline to call, say why. Teachers phrase it in many
# ways (or answer from memory); the sample keeps one canonical form and the why in `limits`.
REFUSAL = "None of the available functions can do this, so I will not call any."


def final_text(jc: JudgedCandidate, unit: UnitSpec) -> str:
    """The final answer in the unit's output form, canonicalised."""
    if jc.pool == "refusal":
        return REFUSAL
    if unit.output_form == "tool_call" and jc.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in jc.tool_calls]
        return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
    if unit.output_form == "final_answer" and jc.final is not None:
        return f"#### {jc.final}"
    return jc.text.strip()


def compress_steps(text: str) -> str:
    """Key steps only: drop the final line, filler, blank and repeated lines; cap the count."""
    kept: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip().strip("*").strip()
        if not line or line.startswith("####") or (_FILLER.match(line) and not _ARITHMETIC.search(line)):
            continue
        norm = re.sub(r"\W+", " ", line.lower()).strip()
        if norm in seen:
            continue
        seen.add(norm)
        kept.append(line)
    return "\n".join(kept[:MAX_RATIONALE_LINES])


def limits_text(jc: JudgedCandidate, verdict: CandidatesJudged) -> str:
    """The boundary the student must learn: why answering (calling) stops here."""
    if jc.pool != "refusal":
        return ""
    names = ", ".join(t.name for t in verdict.task.tools) or "none"
    return f"No declared function fits this request (declared: {names}); call no function and say why."


def tool_steps(jc: JudgedCandidate, pathway: str) -> list[dict]:
    """The tool-trajectory pathway keeps every step (call, arguments, observation, error);
    other pathways keep the parsed call of a tool-call answer."""
    if pathway == "tool_trajectory":
        return [step.model_dump(mode="json") for step in jc.trajectory]
    return [{"tool": c.name, "arguments": c.arguments} for c in jc.tool_calls or []]


def best_per_pool(verdict: CandidatesJudged) -> list[JudgedCandidate]:
    """The top-ranked candidate of each curated pool: one clear target per task and pool."""
    chosen: dict[str, JudgedCandidate] = {}
    for jc in sorted(verdict.candidates, key=lambda c: c.rank):
        if jc.pool in CURATED_POOLS and jc.pool not in chosen:
            chosen[jc.pool] = jc
    return list(chosen.values())


def sample_metadata(task_metadata: dict[str, str], jc: JudgedCandidate) -> dict[str, str]:
    """The task's metadata, the judge's score, and who chose the pool when a human did."""
    decided = {"decided_by": "human"} if HUMAN_ACCEPT in jc.reasons else {}
    return {**task_metadata, "score": str(jc.score), **decided}


def curate(verdict: CandidatesJudged, source: SourceOffset, spec: CapabilitySpec, produced_by: str) -> list[SampleCurated]:
    """Samples for one verdict; held-out (eval) tasks never become samples."""
    task = verdict.task
    unit = spec.units.get(task.unit)
    if task.split == "eval" or unit is None:
        return []
    samples = []
    for jc in best_per_pool(verdict):
        for pathway in unit.pathways:
            final = final_text(jc, unit)
            rationale = compress_steps(jc.text) if pathway == "process" else ""
            limits = limits_text(jc, verdict)
            tool_names = ",".join(sorted(t.name for t in task.tools) or unit.tools)
            steps = tool_steps(jc, pathway)
            if pathway == "process" and not rationale:
                continue  # nothing to teach beyond the answer pathway
            if pathway == "tool_trajectory" and not jc.trajectory:
                continue  # no trajectory to learn from
            samples.append(
                SampleCurated(
                    sample_id=ids.sample_id_for(jc.candidate_id, verdict.judge_version, pathway),
                    unit=task.unit,
                    pathway=pathway,
                    pool=jc.pool,
                    prompt=task.prompt,
                    final=final,
                    rationale=rationale,
                    limits=limits,
                    evidence=jc.evidence,
                    tool_steps=steps,
                    tools=task.tools,
                    content_hash=ids.normalized_hash(
                        f"{task.unit}|{pathway}|{tool_names}|{task.prompt}|{final}|{rationale}|{limits}|{steps}"
                    ),
                    provenance=Provenance(
                        task_id=task.task_id, candidate_id=jc.candidate_id, teacher_id=jc.teacher_id,
                        judge_version=verdict.judge_version, verdict_id=verdict.verdict_id, source=source,
                    ),
                    metadata=sample_metadata(task.metadata, jc),
                    produced_by=produced_by,
                    trace=Trace(task_id=task.task_id, causation_id=verdict.event_id),
                )
            )
    return samples
