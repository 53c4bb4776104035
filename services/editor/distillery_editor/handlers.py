"""The editor's use cases: verdicts become samples (and retractions), human review decisions override judges.

Both handlers take a batch: the governing verdict and the latest decision are remembered by the
offset of the record each came from, and a batch of verdicts shares one embedding call.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import ConsumerRecord

from distillery.contracts.events import CandidatesJudged, ReviewDecided, SampleEvent, SourceOffset
from distillery.runtime.bus import Rejected
from distillery.runtime.bus import _short_error as short_error  # the error text Bus.per_event dead-letters with
from distillery.runtime.wiring import DeadLetter, In, Out, Subscription
from distillery_editor import metrics
from distillery_editor.bootstrap import EditorDeps
from distillery_editor.governance import HUMAN, Outcome, on_decision, on_verdict

log = logging.getLogger("distillery.editor")


async def on_candidates_judged(items: list[In[CandidatesJudged]], deps: EditorDeps) -> list[Out | DeadLetter]:
    if deps.embeddings is not None:  # one model call for the batch's prompts, not one per verdict
        deps.embeddings.prefetch([item.event.task.prompt for item in items])
    return each(items, on_verdict_item, deps)


async def on_review_decided(items: list[In[ReviewDecided]], deps: EditorDeps) -> list[Out | DeadLetter]:
    return each(items, on_decision_item, deps)


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


def each(items: list[In[Any]], handle: Callable[[In[Any], EditorDeps], list[Out]],
         deps: EditorDeps) -> list[Out | DeadLetter]:
    """``handle`` per event, as Bus.per_event runs it: an event it rejects, or whose logic raises,
    is dead-lettered alone (``poison``, with the error) and the batch goes on."""
    results: list[Out | DeadLetter] = []
    for item in items:
        try:
            results.extend(handle(item, deps))
        except Rejected as exc:
            results.append(DeadLetter(item.record, exc.reason, str(exc)))
        except Exception as exc:  # noqa: BLE001 - poison events must not stop the service
            log.warning("poison event at %s: %s", item.record.offset, traceback.format_exc(limit=3))
            results.append(DeadLetter(item.record, "poison", short_error(exc)))
    return results


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
