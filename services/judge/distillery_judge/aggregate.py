"""Gathering a task's candidates without loss (docs/architecture.md §3).

The judge waits for the ``expected_candidates`` of a task, or judges what arrived
when the task times out. The committed offset of a partition never passes the
first record of the oldest task still open there, so a restart re-reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import ConsumerRecord, TopicPartition

from distillery.contracts.events import CandidateGenerated, SourceOffset, Task
from distillery.contracts.ids import round_key


@dataclass
class OpenTask:
    task: Task
    expected: int
    opened_at: float
    partition: TopicPartition
    first_offset: int
    attempt: int
    candidates: dict[str, tuple[CandidateGenerated, SourceOffset]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.candidates) >= self.expected


@dataclass
class AddResult:
    ready: OpenTask | None = None
    duplicate: bool = False
    late: bool = False


class Aggregator:
    def __init__(self, timeout_s: float, judged: set[str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.judged: set[str] = judged if judged is not None else set()
        self.open: dict[str, OpenTask] = {}
        # Judged but not yet durably published: confirmed or restored after the publish.
        self.in_flight: dict[str, OpenTask] = {}
        self.next_offsets: dict[TopicPartition, int] = {}

    def add(self, cand: CandidateGenerated, record: ConsumerRecord, now: float) -> AddResult:
        """Add a candidate; returns the task when its last expected candidate arrived."""
        tp = TopicPartition(record.topic, record.partition)
        self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), record.offset + 1)
        key = round_key(cand.task.task_id, cand.attempt)  # each attempt of a task is judged on its own
        if key in self.judged or key in self.in_flight:
            return AddResult(late=True)  # judged already (redelivery, or arrived after the timeout)
        entry = self.open.get(key)
        if entry is None:
            entry = OpenTask(cand.task, cand.expected_candidates, now, tp, record.offset, cand.attempt)
            self.open[key] = entry
        duplicate = cand.candidate_id in entry.candidates
        if not duplicate:
            entry.expected = max(entry.expected, cand.expected_candidates)
            source = SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)
            entry.candidates[cand.candidate_id] = (cand, source)
        if entry.complete:
            return AddResult(ready=self._take(key), duplicate=duplicate)
        return AddResult(duplicate=duplicate)

    def _take(self, key: str) -> OpenTask:
        entry = self.open.pop(key)
        self.in_flight[key] = entry
        return entry

    def expired(self, now: float) -> list[OpenTask]:
        """Tasks open longer than the timeout; they are judged with what arrived."""
        due = [key for key, t in self.open.items() if now - t.opened_at >= self.timeout_s]
        return [self._take(key) for key in due]

    def confirm(self) -> None:
        """The verdicts of the in-flight tasks are durable: they are judged."""
        self.judged.update(self.in_flight)
        self.in_flight.clear()

    def restore(self) -> None:
        """Publishing failed: in-flight tasks are open again and will be judged again."""
        self.open.update(self.in_flight)
        self.in_flight.clear()

    def mark_judged(self, task_id: str, attempt: int = 1) -> None:
        """Judged (here before a restart, or by another replica): never judged again. An open entry
        is dropped, so it neither times out into a second verdict nor holds commits back."""
        key = round_key(task_id, attempt)
        self.judged.add(key)
        self.open.pop(key, None)

    def commit_limit(self, tp: TopicPartition) -> int | None:
        """The first offset of the oldest task still open on ``tp`` (None: nothing held)."""
        held = [*self.open.values(), *self.in_flight.values()]
        firsts = [t.first_offset for t in held if t.partition == tp]
        return min(firsts) if firsts else None

    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, how far a commit may go now."""
        out = {}
        for tp, nxt in self.next_offsets.items():
            cap = self.commit_limit(tp)
            out[tp] = nxt if cap is None else min(nxt, cap)
        return out

    def drop_partitions(self, tps: set[TopicPartition]) -> None:
        """On a rebalance, forget open work of partitions this instance no longer owns."""
        for task_id in [k for k, t in self.open.items() if t.partition in tps]:
            del self.open[task_id]
        for tp in tps:
            self.next_offsets.pop(tp, None)
