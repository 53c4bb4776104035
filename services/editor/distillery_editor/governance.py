"""Which judgement governs each sample: judge replays and human review, as plain functions on events.

A judge replay runs a new ``judge_version`` over all candidates again. The verdict processed
last for a task governs it: when it comes from a new version, every live sample of an older
version whose candidate it judged is kept if the new version produces the same content
(accepted by both: no churn) and retracted otherwise. A human decision outranks every judge
version: a rejected candidate never yields a sample, an accepted one keeps the human's pool,
and its samples are never retracted by a judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    SampleCurated,
    SampleRetracted,
    SourceOffset,
    Trace,
)
from distillery.contracts.spec import CapabilitySpec
from distillery_editor.logic import HUMAN_ACCEPT, HUMAN_REJECT, curate
from distillery_editor.state import EditorState, LiveSample, VerdictMark

HUMAN = "human"  # SampleRetracted.judge_version of a human decision


@dataclass
class Outcome:
    """What one verdict or decision changes: retractions first, then new samples."""

    samples: list[SampleCurated] = field(default_factory=list)
    retractions: list[SampleRetracted] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # why each curated sample was dropped
    stale: bool = False  # superseded by what the editor processed before: no output


def curated_of(
    state: EditorState, verdict: CandidatesJudged, source: SourceOffset, spec: CapabilitySpec, produced_by: str
) -> list[SampleCurated]:
    """The samples the verdict curates under the human decisions known now (before any dedup)."""
    return curate(apply_decisions(verdict, state.decision), source, spec, produced_by)


def on_verdict(
    state: EditorState, verdict: CandidatesJudged, source: SourceOffset, spec: CapabilitySpec, produced_by: str,
    curated: list[SampleCurated] | None = None,
) -> Outcome:
    """Samples of one (non-eval) verdict, with the retractions a judge version taking over the task implies.

    ``curated``: what :func:`curated_of` gave for this verdict earlier in the same batch, when
    no human decision was processed in between (the batch path curates first, then hashes every
    sample's text for near-duplicates at once).
    """
    task_id = verdict.task.task_id
    if state.is_stale(task_id, verdict.judge_version, source):
        return Outcome(stale=True)
    judged = apply_decisions(verdict, state.decision)
    if curated is None:
        curated = curate(judged, source, spec, produced_by)
    outcome = Outcome(retractions=rejected_by(state, judged, curated, source, produced_by))
    for retraction in outcome.retractions:
        state.retract(retraction)  # before admitting: a retracted sample's content is free again
    state.govern(task_id, VerdictMark.of(verdict.judge_version, source))
    _admit(state, curated, outcome)
    return outcome


def on_decision(
    state: EditorState, decision: ReviewDecided, source: SourceOffset, spec: CapabilitySpec, produced_by: str
) -> Outcome:
    """A human accept curates the candidate in the human's pool; a reject retracts its live samples."""
    if state.is_decision_stale(decision, source):
        return Outcome(stale=True)
    if decision.decision == "reject":
        reason = f"human reject: {decision.note}"
        outcome = Outcome(retractions=[
            retraction_of(sample, HUMAN, reason, source, produced_by, decision.event_id)
            for sample in state.live_samples(decision.task.task_id)
            if sample.candidate_id == decision.candidate.candidate_id
        ])
        for retraction in outcome.retractions:
            state.retract(retraction)
    else:
        curated = curate(accepted_verdict(decision), source, spec, produced_by)
        outcome = Outcome(retractions=replaced_by(state, decision, curated, source, produced_by))
        for retraction in outcome.retractions:
            state.retract(retraction)
        # revive: a candidate rejected and then accepted again (or replaced just now) gets its ids back
        _admit(state, curated, outcome, revive=True)
    state.decide(decision, source)  # remembered, so later verdicts (replays) honour it
    return outcome


def replaced_by(state: EditorState, decision: ReviewDecided, curated: list[SampleCurated], source: SourceOffset,
                produced_by: str) -> list[SampleRetracted]:
    """Live samples of the accepted candidate that the accept changes (the editor had sent them to
    review, or the judge to another pool): retracted, so the human's version takes their id."""
    fresh = {sample.sample_id: sample for sample in curated}
    reason = f"human accept into {decision.pool}: {decision.note}".rstrip(": ")
    return [retraction_of(sample, HUMAN, reason, source, produced_by, decision.event_id)
            for sample in state.live_samples(decision.task.task_id)
            if sample.candidate_id == decision.candidate.candidate_id
            and (new := fresh.get(sample.sample_id)) is not None
            and (new.pool, new.content_hash) != (sample.pool, sample.content_hash)]


def apply_decisions(
    verdict: CandidatesJudged, decision_of: Callable[[str], ReviewDecided | None]
) -> CandidatesJudged:
    """The verdict with human decisions over the judge's pools (a replayed judge never overrules a human)."""
    candidates = [human_view(jc, decision_of(jc.candidate_id)) for jc in verdict.candidates]
    return verdict.model_copy(update={"candidates": candidates})


def human_view(jc: JudgedCandidate, decision: ReviewDecided | None) -> JudgedCandidate:
    if decision is None:
        return jc
    if decision.decision == "reject":
        return jc.model_copy(update={"pool": "discard", "reasons": [*jc.reasons, HUMAN_REJECT]})
    return jc.model_copy(update={"pool": decision.pool or "train", "reasons": [*jc.reasons, HUMAN_ACCEPT]})


def accepted_verdict(decision: ReviewDecided) -> CandidatesJudged:
    """A verdict-like view of an accept: the embedded task and candidate, in the human's pool.

    It keeps the judge version and verdict id that sent the candidate to review (provenance);
    its event id is the decision's, so the samples name the decision as their cause.
    """
    return CandidatesJudged(
        event_id=decision.event_id,
        verdict_id=decision.verdict_id,
        task=decision.task,
        judge_version=decision.judge_version,
        candidates=[human_view(decision.candidate, decision)],
        produced_by=decision.produced_by,
        trace=Trace(task_id=decision.task.task_id, causation_id=decision.event_id),
    )


def rejected_by(
    state: EditorState, judged: CandidatesJudged, curated: list[SampleCurated], source: SourceOffset,
    produced_by: str,
) -> list[SampleRetracted]:
    """Retractions of live samples of other judge versions whose candidate this verdict judged.

    Kept: samples whose content this version produces too, and samples a human accepted.
    Candidates this verdict did not judge (another attempt's) wait for the verdict that does.
    """
    judged_here = {jc.candidate_id: jc for jc in judged.candidates}
    agreed = {sample.content_hash for sample in curated}
    retractions = []
    for sample in state.live_samples(judged.task.task_id):
        jc = judged_here.get(sample.candidate_id)
        if jc is None or sample.judge_version == judged.judge_version or sample.content_hash in agreed:
            continue
        if HUMAN_ACCEPT in jc.reasons:  # apply_decisions tagged it: a human accepted this candidate
            continue
        reason = f"rejected by {judged.judge_version}: {jc.pool}: {', '.join(jc.reasons)}"
        retractions.append(retraction_of(sample, judged.judge_version, reason, source, produced_by, judged.event_id))
    return retractions


def retraction_of(
    sample: LiveSample, decided_by: str, reason: str, source: SourceOffset, produced_by: str, causation_id: str
) -> SampleRetracted:
    task_id = sample.task_id
    return SampleRetracted(
        sample_id=sample.sample_id,
        judge_version=decided_by,
        reason=reason,
        task_id=task_id,
        candidate_id=sample.candidate_id,
        source=source,
        produced_by=produced_by,
        trace=Trace(task_id=task_id, causation_id=causation_id),  # keyed by task: the partition of its samples
    )


def _admit(state: EditorState, curated: list[SampleCurated], outcome: Outcome, *, revive: bool = False) -> None:
    """Exact, near-duplicate and cluster-quota checks, in that order; what passes is published."""
    for sample in state.with_clusters(curated):
        reason = state.admit(sample, revive=revive)
        if reason:
            outcome.duplicates.append(reason)
        else:
            outcome.samples.append(sample)
