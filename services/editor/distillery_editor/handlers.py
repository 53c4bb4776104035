"""The editor's use cases: verdicts become samples (and retractions), human review decisions override judges.

Both handlers take a batch: the governing verdict and the latest decision are remembered by the
offset of the record each came from, and a batch of verdicts shares one embedding call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord

from distillery.contracts.events import CandidatesJudged, ReviewDecided, SampleEvent, SourceOffset
from distillery.contracts.settings import ServiceSettings
from distillery.domain.embeddings import EmbeddingCache
from distillery.runtime.bus import Rejected, each
from distillery.runtime.wiring import Context, DeadLetter, In, Out, Subscription
from distillery_editor import metrics
from distillery_editor.governance import HUMAN, Outcome, on_decision, on_verdict
from distillery_editor.state import EditorState


@dataclass(kw_only=True)
class EditorDeps(Context):
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    embeddings: EmbeddingCache | None = None  # MiniLM prompt embeddings, only when a unit clusters
    state: EditorState = None  # type: ignore[assignment] - built from the spec and embeddings when not given
    # Both subscriptions change one state whose pending changes are committed or rolled back
    # per batch, so their batches must not interleave.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = EditorState(self.settings.topics.verdicts, self.spec, self.embeddings)


async def on_candidates_judged(items: list[In[CandidatesJudged]], deps: EditorDeps) -> list[Out | DeadLetter]:
    if deps.embeddings is not None:  # one model call for the batch's prompts, not one per verdict
        deps.embeddings.prefetch([item.event.task.prompt for item in items])
    return each(items, lambda item: on_verdict_item(item, deps))


async def on_review_decided(items: list[In[ReviewDecided]], deps: EditorDeps) -> list[Out | DeadLetter]:
    return each(items, lambda item: on_decision_item(item, deps))


def on_verdict_item(item: In[CandidatesJudged], deps: EditorDeps) -> list[Out]:
    if item.event.task.unit not in deps.spec.units:
        raise Rejected("unknown_unit", f"unknown unit '{item.event.task.unit}': not in the editor's spec")
    if item.event.task.split == "eval":
        metrics.HELD_OUT.inc()
        return []
    outcome = on_verdict(deps.state, item.event, source_of(item.record), deps.spec, deps.produced_by)
    if outcome.stale:
        metrics.STALE.inc()
    return outs(outcome, deps)


def on_decision_item(item: In[ReviewDecided], deps: EditorDeps) -> list[Out]:
    outcome = on_decision(deps.state, item.event, source_of(item.record), deps.spec, deps.produced_by)
    if not outcome.stale:
        metrics.DECISIONS.labels(item.event.decision).inc()
    return outs(outcome, deps)


def outs(outcome: Outcome, deps: EditorDeps) -> list[Out]:
    """The outcome's retractions, then its samples, on the samples topic; counted."""
    for reason in outcome.duplicates:
        metrics.DROPPED.labels(reason).inc()
    for retraction in outcome.retractions:
        metrics.RETRACTED.labels(HUMAN if retraction.judge_version == HUMAN else "judge_version").inc()
    for sample in outcome.samples:
        metrics.SAMPLES.labels(sample.unit, sample.pool, sample.pathway, sample.tier).inc()
        metrics.TOKENS.labels(sample.unit, sample.pathway, "before").inc(sample.tokens_before)
        metrics.TOKENS.labels(sample.unit, sample.pathway, "after").inc(sample.tokens_after)
    return [Out(deps.topics.samples, event) for event in [*outcome.retractions, *outcome.samples]]


def restore_state(deps: EditorDeps, samples: Iterable[SampleEvent],
                  reviews: Iterable[tuple[ConsumerRecord, ReviewDecided]]) -> None:
    """The state as the samples and reviews topics leave it (read in order, from the start)."""
    deps.state.rebuild_samples(samples)
    deps.state.rebuild_decisions((decision, source_of(record)) for record, decision in reviews)


def source_of(record: ConsumerRecord) -> SourceOffset:
    return SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)


def one_batch_at_a_time(deps: EditorDeps) -> dict[str, Any]:
    """The state's pending changes stay only once the batch's outputs are published (see state.py)."""
    return {"lock": deps.lock, "on_published": deps.state.commit, "on_failed": deps.state.rollback}


SUBSCRIPTIONS = [
    Subscription("verdicts", CandidatesJudged, on_candidates_judged, batch=True, options=one_batch_at_a_time),
    Subscription("reviews", ReviewDecided, on_review_decided, "-reviews", batch=True, options=one_batch_at_a_time),
]
