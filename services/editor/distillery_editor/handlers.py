"""The editor's use cases: verdicts become samples (and retractions), human review decisions override judges.

One consumer reads verdicts and review decisions together. Both are keyed by unit, and the
consumer is range-assigned, so all of a unit's verdicts and decisions reach one replica: the
dedup and quota state of a unit lives in exactly one place (docs/architecture.md §11). The
governing verdict and the latest decision are remembered by the offset of the record each came
from, and a batch's verdicts share one embedding call. Whenever partitions are assigned, the state
is rebuilt from the samples and reviews topics: a unit that moved here brings what the replica
that had it admitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord

from distillery.contracts.events import (
    CandidatesJudged,
    ReviewDecided,
    SampleCurated,
    SampleEvent,
    SourceOffset,
    parse_sample_record,
)
from distillery.contracts.settings import ServiceSettings
from distillery.domain.embeddings import EmbeddingCache
from distillery.runtime.bus import Rejected, each
from distillery.runtime.checkpoint import CheckpointStore, Fold, Rebuilt, fingerprint, rebuild
from distillery.runtime.counting import child
from distillery.runtime.wiring import Context, DeadLetter, In, Out, Subscription
from distillery_editor import metrics
from distillery_editor.dedup import NUM_PERM, SEED
from distillery_editor.governance import HUMAN, Outcome, curated_of, on_decision, on_verdict
from distillery_editor.state import EditorState

log = logging.getLogger("distillery.editor")


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


Input = CandidatesJudged | ReviewDecided


async def on_editor_inputs(items: list[In[Input]], deps: EditorDeps) -> list[Out | DeadLetter]:
    """Verdicts and review decisions, in the order the consumer read them."""
    if deps.embeddings is not None:  # one model call for the batch's prompts, not one per verdict
        deps.embeddings.prefetch([item.event.task.prompt for item in items if isinstance(item.event, CandidatesJudged)])
    curated = curated_ahead(items, deps)
    deps.state.prepare_near([sample for samples in curated.values() for sample in samples])
    return each(items, lambda item: on_verdict_item(item, deps, curated.get(id(item)))
                if isinstance(item.event, CandidatesJudged) else on_decision_item(item, deps))


def curated_ahead(items: list[In[Input]], deps: EditorDeps) -> dict[int, list[SampleCurated]]:
    """What the batch's leading verdicts curate, so their near-duplicate texts are hashed in one pass.

    Only the verdicts before the batch's first review decision: a decision changes what later
    verdicts curate. A verdict that fails here is curated again in order, and fails there with
    its dead letter.
    """
    ahead: dict[int, list[SampleCurated]] = {}
    for item in items:
        if not isinstance(item.event, CandidatesJudged):
            break
        if item.event.shadow or item.event.task.unit not in deps.spec.units:
            continue
        try:
            ahead[id(item)] = curated_of(deps.state, item.event, source_of(item.record), deps.spec, deps.produced_by)
        except Exception:  # noqa: BLE001 - reported by the in-order pass, with the item's dead letter
            continue
    return ahead


def on_verdict_item(item: In[CandidatesJudged], deps: EditorDeps,
                    curated: list[SampleCurated] | None = None) -> list[Out]:
    if item.event.task.unit not in deps.spec.units:
        raise Rejected("unknown_unit", f"unknown unit '{item.event.task.unit}': not in the editor's spec")
    if item.event.task.split == "eval":
        metrics.HELD_OUT.inc()
        return []
    if item.event.shadow:  # a promoted student's live answer: judged for the evaluator, never a sample
        metrics.SHADOW.inc()
        return []
    outcome = on_verdict(deps.state, item.event, source_of(item.record), deps.spec, deps.produced_by, curated)
    if outcome.stale:
        metrics.STALE.inc()
    return outs(outcome, deps)


def on_decision_item(item: In[ReviewDecided], deps: EditorDeps) -> list[Out]:
    if item.event.task.unit not in deps.spec.units:
        raise Rejected("unknown_unit", f"unknown unit '{item.event.task.unit}': not in the editor's spec")
    outcome = on_decision(deps.state, item.event, source_of(item.record), deps.spec, deps.produced_by)
    if not outcome.stale:
        metrics.DECISIONS.labels(item.event.decision).inc()
    return outs(outcome, deps)


def outs(outcome: Outcome, deps: EditorDeps) -> list[Out]:
    """The outcome's retractions, then its samples, on the samples topic; counted."""
    for reason in outcome.duplicates:
        child(metrics.DROPPED, reason).inc()
    for retraction in outcome.retractions:
        child(metrics.RETRACTED, HUMAN if retraction.judge_version == HUMAN else "judge_version").inc()
    for sample in outcome.samples:
        child(metrics.SAMPLES, sample.unit, sample.pool, sample.pathway, sample.tier).inc()
        child(metrics.TOKENS, sample.unit, sample.pathway, "before").inc(sample.tokens_before)
        child(metrics.TOKENS, sample.unit, sample.pathway, "after").inc(sample.tokens_after)
    return [Out(deps.topics.samples, event) for event in [*outcome.retractions, *outcome.samples]]


def restore_state(deps: EditorDeps, samples: Iterable[SampleEvent],
                  reviews: Iterable[tuple[ConsumerRecord, ReviewDecided]]) -> None:
    """The state as the samples and reviews topics leave it (read in order, from the start)."""
    deps.state.rebuild_samples(samples)
    deps.state.rebuild_decisions((decision, source_of(record)) for record, decision in reviews)


def editor_fold(deps: EditorDeps) -> Fold:
    """The state as a fold over the samples topic, then the reviews topic (each is independent of the other)."""
    def apply(topic: str, items: list[tuple[ConsumerRecord, Any]]) -> None:
        if topic == deps.topics.samples:
            deps.state.rebuild_samples(event for _, event in items)
        else:
            deps.state.rebuild_decisions((decision, source_of(record)) for record, decision in items)

    return Fold(topics={deps.topics.samples: parse_sample_record, deps.topics.reviews: ReviewDecided},
                reset=deps.state.reset, apply=apply, export=deps.state.export, restore=deps.state.restore)


def checkpoints_of(deps: EditorDeps) -> CheckpointStore | None:
    """Where the editor's checkpoints live (None: checkpoints are off)."""
    if deps.settings.state_dir is None:
        return None
    topics = deps.topics
    shape = fingerprint("editor", topics.samples, topics.reviews, topics.verdicts, deps.spec.model_dump_json(),
                        f"minhash-{NUM_PERM}-{SEED}")
    return CheckpointStore(deps.settings.state_dir, "editor", shape)


async def rebuild_state(deps: EditorDeps) -> Rebuilt:
    """The state as the samples and reviews topics leave it now (from the newest checkpoint, when there is
    one): a restarted or rebalanced editor must not re-admit, re-add what was retracted, or hand a task
    back to an old judge."""
    rebuilt = await rebuild(deps.settings, editor_fold(deps), checkpoints_of(deps), deps.settings.checkpoint_after)
    log.info("editor state rebuilt: %d live task(s), from %s and %d record(s) after it%s", len(deps.state.live),
             rebuilt.loaded or "the start", rebuilt.tail, f"; checkpoint {rebuilt.saved}" if rebuilt.saved else "")
    return rebuilt


class RebuildOnAssign(ConsumerRebalanceListener):
    """A rebalance waits for the batch in progress (its samples published, its offsets committed);
    the replica that now owns a unit rebuilds its state from the samples topic, which holds them."""

    def __init__(self, deps: EditorDeps) -> None:
        self.deps = deps

    async def on_partitions_revoked(self, revoked):
        async with self.deps.lock:
            return None

    async def on_partitions_assigned(self, assigned):
        async with self.deps.lock:
            await rebuild_state(self.deps)


def source_of(record: ConsumerRecord) -> SourceOffset:
    return SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)


def one_batch_at_a_time(deps: EditorDeps) -> dict[str, Any]:
    """The state's pending changes stay only once the batch's outputs are published (see state.py)."""
    return {"lock": deps.lock, "on_published": deps.state.commit, "on_failed": deps.state.rollback,
            "listener": RebuildOnAssign(deps)}


SUBSCRIPTIONS = [
    Subscription("verdicts", CandidatesJudged, on_editor_inputs, batch=True, options=one_batch_at_a_time,
                 also={"reviews": ReviewDecided}),
]
