"""Editor wiring: verdicts and review decisions in, samples and retractions out; state rebuilt from topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter

from distillery.runtime.bus import In, Out, Rejected
from distillery.contracts.events import (CandidatesJudged, Event, ReviewDecided, SourceOffset, parse_event,
                               parse_sample_record)
from distillery.runtime.kafka import read_snapshot
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.domain.embeddings import EmbeddingCache, Embedder
from distillery.contracts.spec import load_spec
from distillery_editor import __version__
from distillery_editor.governance import HUMAN, Outcome, on_decision, on_verdict
from distillery_editor.state import EditorState

SAMPLES = Counter("distillery_editor_samples_total", "Samples published", ["unit", "pool", "pathway", "tier"])
TOKENS = Counter("distillery_editor_tokens_total", "Tokens of published samples before and after compression "
                 "(compression ratio = after / before)", ["unit", "pathway", "stage"])
DROPPED = Counter("distillery_editor_duplicates_total",
                  "Samples not admitted: duplicate_id, duplicate_content, near_duplicate, cluster_quota", ["reason"])
HELD_OUT = Counter("distillery_editor_heldout_skipped_total", "Verdicts of eval tasks, never made samples")
STALE = Counter("distillery_editor_stale_verdicts_total", "Verdicts superseded by a later one of another version")
RETRACTED = Counter("distillery_editor_retractions_total", "Samples retracted", ["reason"])  # judge_version, human
DECISIONS = Counter("distillery_editor_review_decisions_total", "Human review decisions applied", ["decision"])


def build():
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    bus = make_bus(settings, "editor", __version__)
    clustering = any(unit.editor.cluster_similarity > 0 for unit in spec.units.values())
    embeddings = EmbeddingCache(Embedder().embed) if clustering else None
    state = EditorState(bus.topics.verdicts, spec, embeddings)
    # Both subscriptions change one state whose pending changes are committed or rolled back
    # per batch, so their batches must not interleave.
    one_batch_at_a_time = asyncio.Lock()

    def outs(outcome: Outcome) -> list[Out]:
        for reason in outcome.duplicates:
            DROPPED.labels(reason).inc()
        for retraction in outcome.retractions:
            RETRACTED.labels(HUMAN if retraction.judge_version == HUMAN else "judge_version").inc()
        for sample in outcome.samples:
            SAMPLES.labels(sample.unit, sample.pool, sample.pathway, sample.tier).inc()
            TOKENS.labels(sample.unit, sample.pathway, "before").inc(sample.tokens_before)
            TOKENS.labels(sample.unit, sample.pathway, "after").inc(sample.tokens_after)
        return [Out(bus.topics.samples, event) for event in [*outcome.retractions, *outcome.samples]]

    def on_verdict_item(item: In[CandidatesJudged]) -> list[Out]:
        if item.event.task.unit not in spec.units:
            raise Rejected("unknown_unit", f"unknown unit '{item.event.task.unit}': not in the editor's spec")
        if item.event.task.split == "eval":
            HELD_OUT.inc()
            return []
        outcome = on_verdict(state, item.event, source_of(item.record), spec, bus.produced_by)
        if outcome.stale:
            STALE.inc()
        return outs(outcome)

    def on_decision_item(item: In[ReviewDecided]) -> list[Out]:
        outcome = on_decision(state, item.event, source_of(item.record), spec, bus.produced_by)
        if not outcome.stale:
            DECISIONS.labels(item.event.decision).inc()
        return outs(outcome)

    async def rebuild_state() -> None:
        """A restarted editor must not re-admit, re-add what was retracted, or hand a task back to an old judge."""
        samples = await read_snapshot(settings, bus.topics.samples)
        state.rebuild_samples(event for _, event in decoded(samples.records, parse_sample_record))
        reviews = await read_snapshot(settings, bus.topics.reviews)
        state.rebuild_decisions(
            (decision, source_of(record)) for record, decision in decoded(reviews.records, parse_decision)
        )

    hooks = {"lock": one_batch_at_a_time, "on_published": state.commit, "on_failed": state.rollback}
    per_verdict = bus.per_event(on_verdict_item)

    async def on_verdicts(items: list[In[CandidatesJudged]]) -> list[Out]:
        if embeddings is not None:  # one model call for the batch's prompts, not one per verdict
            embeddings.prefetch([item.event.task.prompt for item in items])
        return await per_verdict(items)

    bus.subscribe(bus.topics.verdicts, CandidatesJudged, on_verdicts, group_id=settings.group("editor"), **hooks)
    bus.subscribe(bus.topics.reviews, ReviewDecided, bus.per_event(on_decision_item),
                  group_id=settings.group("editor") + "-reviews", **hooks)
    return make_app(bus, spec, on_startup=[rebuild_state]), settings


def source_of(record: ConsumerRecord) -> SourceOffset:
    return SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)


def parse_decision(payload: bytes) -> ReviewDecided:
    return parse_event(ReviewDecided, payload)


def decoded(records: list[ConsumerRecord], parse: Callable[[bytes], Event]) -> list[tuple[ConsumerRecord, Any]]:
    """The records that parse, with their events. The rest were dead-lettered when first consumed."""
    out = []
    for record in records:
        with contextlib.suppress(ValueError):
            out.append((record, parse(record.value or b"")))
    return out
