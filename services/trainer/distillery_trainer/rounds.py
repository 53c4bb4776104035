"""Automatic rounds (docs/trainer.md "Rounds"): the trainer starts a student's next round itself.

A round is a training run on the samples admitted since the last one. Its request id is derived
from the student and the round number, so the state of every student's rounds is read back from
the topics, never kept in memory:

* round *n* was **requested** when a ``TrainingRequested`` with ``round_request_id(student, n)`` is
  on the training requests topic;
* it is **finished** when a ``StudentTrained`` names that request as its cause, or the trainer
  dead-lettered the request (a refusal: nothing to train on);
* a round still **in progress** blocks the next one: rounds never overlap.

A crash anywhere costs nothing: a request published but not yet trained is redelivered to the
trainer; a scheduler that restarts reads the same state; publishing round *n* twice publishes the
same request id, which the trainer answers once (``handlers.already_trained``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from distillery.contracts import ids
from distillery.contracts.events import SampleCurated, StudentTrained, TrainingRequested, live_samples
from distillery.contracts.spec import RoundPolicy
from distillery.domain.loop import ROUND_REASON


def round_request_id(student: str, number: int) -> str:
    return ids.content_id("train", "round", student, number)


@dataclass(frozen=True)
class RoundState:
    """Where a student's automatic rounds stand, read from the topics."""

    last: int  # the highest round requested (0: none yet)
    in_progress: bool  # requested, and neither trained nor refused yet
    since: dict[int, int]  # samples partition -> end offset of the last trained round's snapshot
    since_at: datetime | None  # when the last round (trained or refused) finished, or was requested


def round_state(student: str, requests: list[TrainingRequested], trained: list[StudentTrained],
                refused: set[str], samples_topic: str) -> RoundState:
    """The state of ``student``'s rounds from the requests and students topics and the refused request ids."""
    requested = {r.request_id: r for r in requests if r.student == student and r.reason.startswith(ROUND_REASON)}
    by_cause = {t.trace.causation_id: t for t in trained if t.student == student}
    last = 0
    while round_request_id(student, last + 1) in requested:
        last += 1
    since: dict[int, int] = {}
    since_at = None
    for number in range(1, last + 1):  # the latest trained round's snapshot is where "new" starts
        rid = round_request_id(student, number)
        if rid in by_cause:
            manifest = by_cause[rid].manifest  # the snapshot it trained on: {"topic", "end_offsets"}
            ends = manifest.get("end_offsets", {}) if manifest.get("topic") == samples_topic else {}
            since = {int(p): int(o) for p, o in ends.items()}
            since_at = by_cause[rid].produced_at
        elif rid in refused:
            since_at = requested[rid].produced_at
    current = round_request_id(student, last)
    in_progress = last > 0 and current not in by_cause and current not in refused
    return RoundState(last, in_progress, since, since_at)


def new_samples(records: list[tuple[int, int, object]], units: list[str], since: dict[int, int]) -> int:
    """Live samples of ``units`` admitted after the ``since`` offsets. ``records`` are
    (partition, offset, sample event) of the samples topic, in order."""
    events = [event for _, _, event in records]
    live = {s.sample_id for s in live_samples(events)}
    return sum(1 for partition, offset, event in records
               if isinstance(event, SampleCurated) and event.sample_id in live and event.unit in units
               and offset >= since.get(partition, 0))


def due(policy: RoundPolicy, state: RoundState, fresh: int, now: datetime) -> str | None:
    """Why the next round should start now (None: not yet). Never while one is in progress, never
    without a new sample."""
    if policy.manual or state.in_progress or fresh == 0:
        return None
    if policy.every_samples is not None:
        return f"{fresh} new samples >= every_samples {policy.every_samples}" if fresh >= policy.every_samples else None
    waited = (now - state.since_at).total_seconds() if state.since_at else None
    if waited is None or waited >= policy.every_seconds:
        return f"every {policy.every} ({fresh} new samples)"
    return None


def round_request(student: str, number: int, why: str, produced_by: str,
                  stopped: list[str] | None = None) -> TrainingRequested:
    """Round ``number``'s request; ``stopped`` units (a stop signal holds) are left out and named in the reason."""
    if stopped:
        why += f"; leaves out {', '.join(stopped)} (stop signal)"
    return TrainingRequested(request_id=round_request_id(student, number), student=student,
                             reason=f"{ROUND_REASON} {number}: {why}", exclude_units=list(stopped or []),
                             produced_by=produced_by)
