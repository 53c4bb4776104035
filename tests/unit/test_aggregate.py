"""Unit tests for distillery_judge.aggregate.Aggregator: gathering candidates without loss.

Records are plain stand-ins for aiokafka's ConsumerRecord: the aggregator only reads
``topic``, ``partition`` and ``offset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, SourceOffset, Task, Trace
from distillery_judge.aggregate import Aggregator

TOPIC = "distill.candidates.v1"
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)
TIMEOUT = 10.0


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int


def rec(offset: int, partition: int = 0) -> Record:
    return Record(TOPIC, partition, offset)


def make_task(name: str) -> Task:
    return Task(task_id=ids.task_id_for("math_steps", name), unit="math_steps", prompt=name)


def cand(task: Task, teacher: str, expected: int = 2) -> CandidateGenerated:
    request_id = ids.request_id_for(task.task_id, teacher)
    return CandidateGenerated(
        candidate_id=ids.candidate_id_for(request_id), request_id=request_id, task=task, teacher_id=teacher,
        strategy="competition", route_reason="test", expected_candidates=expected, text="#### 1",
        produced_by="teacher@test", trace=Trace(task_id=task.task_id, causation_id=request_id),
    )


def test_a_task_is_returned_once_when_its_last_candidate_arrives() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    first = agg.add(cand(task, "t1"), rec(0), now=0.0)
    assert first.ready is None and not first.duplicate and not first.late
    done = agg.add(cand(task, "t2"), rec(1), now=1.0)
    assert done.ready is not None
    assert done.ready.task == task
    assert sorted(c.teacher_id for c, _ in done.ready.candidates.values()) == ["t1", "t2"]
    assert task.task_id in agg.in_flight and task.task_id not in agg.open


def test_candidates_keep_their_source_offsets() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1"), rec(4, partition=1), now=0.0)
    ready = agg.add(cand(task, "t2"), rec(9, partition=1), now=0.0).ready
    sources = sorted(src.offset for _, src in ready.candidates.values())
    assert sources == [4, 9]
    assert all(src == SourceOffset(topic=TOPIC, partition=1, offset=src.offset) for _, src in ready.candidates.values())
    assert (ready.partition, ready.first_offset) == (TP1, 4)


def test_a_single_teacher_task_is_ready_at_once() -> None:
    agg = Aggregator(TIMEOUT)
    assert agg.add(cand(make_task("a"), "t1", expected=1), rec(0), now=0.0).ready is not None


def test_a_duplicate_candidate_is_ignored() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1"), rec(0), now=0.0)
    again = agg.add(cand(task, "t1"), rec(1), now=0.0)  # redelivered under a new offset
    assert again.duplicate and again.ready is None
    assert len(agg.open[task.task_id].candidates) == 1
    assert agg.add(cand(task, "t2"), rec(2), now=0.0).ready is not None


def test_a_candidate_after_the_verdict_was_confirmed_is_late() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1", expected=1), rec(0), now=0.0)
    agg.confirm()
    late = agg.add(cand(task, "t1", expected=1), rec(5), now=1.0)
    assert late.late and late.ready is None
    assert task.task_id not in agg.open
    assert agg.safe_offsets() == {TP0: 6}  # a late candidate does not hold the partition


def test_a_candidate_of_an_in_flight_task_is_late() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1", expected=1), rec(0), now=0.0)
    assert agg.add(cand(task, "t1", expected=1), rec(1), now=0.0).late


def test_tasks_rebuilt_from_the_verdicts_topic_are_late() -> None:
    task = make_task("a")
    agg = Aggregator(TIMEOUT, judged={task.task_id})
    assert agg.add(cand(task, "t1"), rec(0), now=0.0).late
    other = make_task("b")
    agg.mark_judged(other.task_id)
    assert agg.add(cand(other, "t1"), rec(1), now=0.0).late
    assert agg.open == {}


def test_commit_is_held_at_the_first_offset_of_the_oldest_open_task() -> None:
    agg = Aggregator(TIMEOUT)
    a, b = make_task("a"), make_task("b")
    agg.add(cand(a, "t1"), rec(3), now=0.0)
    agg.add(cand(b, "t1"), rec(4), now=0.0)
    agg.add(cand(b, "t2"), rec(5), now=0.0)  # b complete, a still open
    assert agg.commit_limit(TP0) == 3
    assert agg.safe_offsets() == {TP0: 3}


def test_commit_is_held_while_a_verdict_is_in_flight_and_released_on_confirm() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1"), rec(7), now=0.0)
    agg.add(cand(task, "t2"), rec(8), now=0.0)
    assert agg.open == {} and agg.commit_limit(TP0) == 7  # judged, not yet durable
    assert agg.safe_offsets() == {TP0: 7}
    agg.confirm()
    assert agg.commit_limit(TP0) is None
    assert agg.safe_offsets() == {TP0: 9}
    assert task.task_id in agg.judged


def test_commit_limits_are_per_partition() -> None:
    agg = Aggregator(TIMEOUT)
    agg.add(cand(make_task("a"), "t1"), rec(2, partition=0), now=0.0)
    agg.add(cand(make_task("b"), "t1", expected=1), rec(6, partition=1), now=0.0)
    agg.confirm()
    assert agg.commit_limit(TP0) == 2
    assert agg.commit_limit(TP1) is None
    assert agg.safe_offsets() == {TP0: 2, TP1: 7}


def test_restore_puts_in_flight_tasks_back_and_a_redelivery_completes_them_again() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1"), rec(0), now=0.0)
    agg.add(cand(task, "t2"), rec(1), now=0.0)
    agg.restore()  # publishing the verdict failed
    assert agg.in_flight == {} and task.task_id in agg.open
    assert task.task_id not in agg.judged
    assert agg.commit_limit(TP0) == 0
    redelivered = agg.add(cand(task, "t2"), rec(1), now=0.5)
    assert redelivered.duplicate and redelivered.ready is not None
    assert len(redelivered.ready.candidates) == 2


def test_a_task_expires_after_the_timeout_with_what_arrived() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1", expected=3), rec(0), now=100.0)
    assert agg.expired(now=100.0 + TIMEOUT - 0.01) == []
    (due,) = agg.expired(now=100.0 + TIMEOUT)
    assert due.task == task and len(due.candidates) == 1 and due.expected == 3
    assert task.task_id in agg.in_flight
    assert agg.expired(now=1000.0) == []  # taken once


def test_only_tasks_past_the_timeout_expire() -> None:
    agg = Aggregator(TIMEOUT)
    old, new = make_task("old"), make_task("new")
    agg.add(cand(old, "t1"), rec(0), now=0.0)
    agg.add(cand(new, "t1"), rec(1), now=8.0)
    assert [t.task.task_id for t in agg.expired(now=TIMEOUT)] == [old.task_id]
    assert list(agg.open) == [new.task_id]


def test_expected_grows_to_the_largest_announced_count() -> None:
    agg = Aggregator(TIMEOUT)
    task = make_task("a")
    agg.add(cand(task, "t1", expected=2), rec(0), now=0.0)
    assert agg.add(cand(task, "t2", expected=3), rec(1), now=0.0).ready is None
    assert agg.add(cand(task, "t3", expected=3), rec(2), now=0.0).ready is not None


def test_drop_partitions_forgets_open_work_of_revoked_partitions() -> None:
    agg = Aggregator(TIMEOUT)
    a, b = make_task("a"), make_task("b")
    agg.add(cand(a, "t1"), rec(0, partition=0), now=0.0)
    agg.add(cand(b, "t1"), rec(0, partition=1), now=0.0)
    agg.drop_partitions({TP0})
    assert list(agg.open) == [b.task_id]
    assert agg.commit_limit(TP0) is None
    assert agg.safe_offsets() == {TP1: 0}
    # Re-assigned later: the task is read again from the committed offset and opens afresh.
    assert agg.add(cand(a, "t1"), rec(0, partition=0), now=1.0).duplicate is False
