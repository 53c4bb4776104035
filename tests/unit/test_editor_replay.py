"""Unit tests for distillery_editor.governance and .state: judge replays, human review, rebuild, rollback."""

from __future__ import annotations

import pytest

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    SampleRetracted,
    SourceOffset,
    Task,
    Trace,
    decision_id_for,
    live_samples,
)
from distillery_editor.governance import Outcome, on_decision, on_verdict
from distillery_editor.state import EditorState, VerdictMark

V1, V2 = "rules-v1-aaaa", "rules-v2-bbbb"
VERDICTS, REVIEWS = "t.verdicts.v1", "t.reviews.v1"
PRODUCED_BY = "editor@test"


@pytest.fixture
def task(tasks) -> Task:
    return tasks["math_steps"]


@pytest.fixture
def run(spec):
    """An editor over one state; every outcome is committed (published) and recorded in topic order."""

    class Editor:
        def __init__(self) -> None:
            self.state = EditorState(VERDICTS)
            self.published: list = []  # the samples topic, in order
            self.reviews: list[tuple[ReviewDecided, SourceOffset]] = []  # the reviews topic

        def verdict(self, v: CandidatesJudged, offset: int) -> Outcome:
            return self._published(on_verdict(self.state, v, at(offset), spec, PRODUCED_BY))

        def decision(self, d: ReviewDecided, offset: int) -> Outcome:
            self.reviews.append((d, at(offset, REVIEWS)))
            return self._published(on_decision(self.state, d, at(offset, REVIEWS), spec, PRODUCED_BY))

        def live_ids(self) -> set[str]:
            return {s.sample_id for samples in self.state.live.values() for s in samples.values()}

        def _published(self, outcome: Outcome) -> Outcome:
            self.published.extend([*outcome.retractions, *outcome.samples])
            self.state.commit()
            return outcome

    return Editor()


def at(offset: int, topic: str = VERDICTS) -> SourceOffset:
    return SourceOffset(topic=topic, partition=1, offset=offset)


def cand(cid: str, pool: str, final: str, rank: int = 1, reasons: list[str] | None = None) -> JudgedCandidate:
    # no steps in the text: one `answer` sample per accepted candidate, its content set by `final`
    return JudgedCandidate(candidate_id=cid, teacher_id=f"teacher-{cid}", text=f"#### {final}", pool=pool, rank=rank,
                           score=0.9, final=final, reasons=reasons or ["rules_passed"])


def verdict(task: Task, version: str, *candidates: JudgedCandidate, attempt: int = 1) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, version, attempt), task=task,
                            judge_version=version, candidates=list(candidates), attempt=attempt,
                            produced_by="judge@test", trace=Trace(task_id=task.task_id))


def decided(task: Task, jc: JudgedCandidate, decision: str, pool: str | None = None, note: str = "") -> ReviewDecided:
    return ReviewDecided(decision_id=decision_id_for(jc.candidate_id, decision, pool, note, "ana"), task=task,
                         candidate=jc, judge_version=V1, verdict_id=ids.verdict_id_for(task.task_id, V1),
                         decision=decision, pool=pool, note=note, reviewer="ana", produced_by="cli@test",
                         trace=Trace(task_id=task.task_id))


def sample_of(cid: str, version: str) -> str:
    return ids.sample_id_for(cid, version, "answer")


# --- judge replays ----------------------------------------------------------------------------------------


def test_a_new_version_keeps_what_it_also_accepts_and_retracts_what_it_rejects(run, task) -> None:
    run.verdict(verdict(task, V1, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2)), 10)
    assert run.live_ids() == {sample_of("A", V1), sample_of("B", V1)}
    v2 = verdict(task, V2, cand("A", "train", "12"), cand("B", "discard", "13", rank=2, reasons=["wrong_answer"]))
    outcome = run.verdict(v2, 20)
    (retraction,) = outcome.retractions
    assert retraction.sample_id == sample_of("B", V1) and retraction.candidate_id == "B"
    assert retraction.judge_version == V2 and retraction.reason == f"rejected by {V2}: discard: wrong_answer"
    assert retraction.source == at(20) and retraction.task_id == task.task_id
    assert retraction.trace == Trace(task_id=task.task_id, causation_id=v2.event_id)
    assert retraction.key == task.task_id  # the partition of the task's samples
    assert outcome.samples == [] and outcome.duplicates == ["duplicate_content"]  # A: accepted by both, no churn
    assert run.live_ids() == {sample_of("A", V1)}
    assert run.state.governing[task.task_id] == VerdictMark(V2, 1, 20)


def test_a_redelivered_verdict_of_the_replaced_version_is_stale(run, task) -> None:
    v1 = verdict(task, V1, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2))
    run.verdict(v1, 10)
    run.verdict(verdict(task, V2, cand("A", "discard", "12"), cand("B", "hard_case", "13", rank=2)), 20)
    live = run.live_ids()
    assert live == {sample_of("B", V1)}
    assert run.verdict(v1, 10) == Outcome(stale=True)  # redelivery after a crash: older than V2's verdict
    assert run.verdict(v1, 30) == Outcome(stale=True)  # republished: V1 lost the task, it never takes it back
    assert run.live_ids() == live and run.state.governing[task.task_id] == VerdictMark(V2, 1, 20)


def test_attempt_two_of_the_same_version_just_adds_samples(run, task) -> None:
    first = verdict(task, V1, cand("A", "discard", "12"))
    run.verdict(first, 10)
    outcome = run.verdict(verdict(task, V1, cand("C", "train", "14"), attempt=2), 15)
    assert [s.sample_id for s in outcome.samples] == [sample_of("C", V1)] and outcome.retractions == []
    # attempt 1 again (same version, lower offset): not stale, and nothing doubles
    assert run.verdict(first, 10) == Outcome()
    assert run.state.governing[task.task_id] == VerdictMark(V1, 1, 15)


def test_a_new_version_only_judges_the_candidates_of_its_verdict(run, task) -> None:
    run.verdict(verdict(task, V1, cand("A", "train", "12")), 10)
    run.verdict(verdict(task, V1, cand("C", "hard_case", "14"), attempt=2), 11)
    outcome = run.verdict(verdict(task, V2, cand("A", "train", "12")), 20)
    assert outcome.retractions == []  # C belongs to attempt 2: V2's attempt-2 verdict decides on it
    outcome = run.verdict(verdict(task, V2, cand("C", "failure", "14", reasons=["format"]), attempt=2), 21)
    assert [r.sample_id for r in outcome.retractions] == [sample_of("C", V1)]
    assert run.live_ids() == {sample_of("A", V1)}


def test_a_new_version_adds_what_only_it_accepts(run, task) -> None:
    run.verdict(verdict(task, V1, cand("A", "train", "12"), cand("B", "review", "13", rank=2)), 10)
    outcome = run.verdict(verdict(task, V2, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2)), 20)
    assert [s.sample_id for s in outcome.samples] == [sample_of("B", V2)] and outcome.retractions == []
    assert outcome.samples[0].provenance.judge_version == V2


# --- human review -----------------------------------------------------------------------------------------


def test_a_human_reject_retracts_the_candidate_and_outlives_a_replay(run, task) -> None:
    a = cand("A", "train", "12")
    run.verdict(verdict(task, V1, a, cand("B", "hard_case", "13", rank=2)), 10)
    reject = decided(task, a, "reject", note="copied from the prompt")
    outcome = run.decision(reject, 3)
    (retraction,) = outcome.retractions
    assert retraction.sample_id == sample_of("A", V1) and retraction.judge_version == "human"
    assert retraction.reason == "human reject: copied from the prompt" and retraction.source == at(3, REVIEWS)
    assert retraction.trace.causation_id == reject.event_id
    outcome = run.verdict(verdict(task, V2, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2)), 20)
    assert outcome.samples == [] and outcome.retractions == []  # A stays rejected; B's content is accepted by both
    assert run.live_ids() == {sample_of("B", V1)}


def test_a_human_accept_curates_in_the_humans_pool_and_a_replay_never_retracts_it(run, task) -> None:
    r = cand("R", "review", "14", reasons=["low_confidence"])
    v1 = verdict(task, V1, cand("A", "train", "12"), r)
    run.verdict(v1, 10)
    accept = decided(task, r, "accept", pool="hard_case")
    (sample,) = run.decision(accept, 4).samples
    assert sample.sample_id == sample_of("R", V1) and sample.pool == "hard_case"
    assert sample.metadata["decided_by"] == "human" and sample.trace.causation_id == accept.event_id
    assert (sample.provenance.judge_version, sample.provenance.verdict_id) == (V1, v1.verdict_id)
    assert sample.provenance.source == at(4, REVIEWS)
    # V2 discards R: the human's decision stands, and V2's copy of it is a content duplicate
    outcome = run.verdict(verdict(task, V2, cand("A", "train", "12"), cand("R", "discard", "14", reasons=["x"])), 20)
    assert outcome.retractions == [] and outcome.samples == []
    assert run.live_ids() == {sample_of("A", V1), sample_of("R", V1)}


def test_an_accept_without_a_pool_goes_to_train(run, task) -> None:
    r = cand("R", "review", "14")
    (sample,) = run.decision(decided(task, r, "accept"), 4).samples
    assert sample.pool == "train"


def test_the_latest_decision_wins_and_an_accept_revives_a_rejected_candidate(run, task) -> None:
    r = cand("R", "review", "14")
    accept, reject = decided(task, r, "accept"), decided(task, r, "reject", note="wrong")
    run.decision(accept, 4)
    run.decision(reject, 5)
    assert run.live_ids() == set()
    assert run.decision(accept, 4) == Outcome(stale=True)  # the old accept redelivered: the reject stands
    again = decided(task, r, "accept", note="second look")
    assert [s.sample_id for s in run.decision(again, 6).samples] == [sample_of("R", V1)]


def test_a_retracted_samples_content_is_free_again(run, task) -> None:
    b = cand("B", "hard_case", "13")
    run.verdict(verdict(task, V1, b), 10)
    run.decision(decided(task, b, "reject"), 3)
    outcome = run.verdict(verdict(task, V1, cand("E", "hard_case", "13"), attempt=2), 12)
    assert [s.sample_id for s in outcome.samples] == [sample_of("E", V1)]


# --- rebuild and rollback ---------------------------------------------------------------------------------


def test_a_rebuilt_state_matches_the_one_that_published(run, task) -> None:
    r = cand("R", "review", "14")
    v1 = verdict(task, V1, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2), r)
    run.verdict(v1, 10)
    run.decision(decided(task, r, "accept"), 4)
    run.verdict(verdict(task, V2, cand("A", "train", "12"), cand("B", "discard", "13"), r), 20)
    rebuilt = EditorState(VERDICTS)
    rebuilt.rebuild_samples(run.published)
    rebuilt.rebuild_decisions(run.reviews)
    assert rebuilt.pending == 0
    assert rebuilt.live == run.state.live and rebuilt.live_hashes == run.state.live_hashes
    assert {s.sample_id for s in live_samples(run.published)} == run.live_ids()
    assert rebuilt.governing == run.state.governing == {task.task_id: VerdictMark(V2, 1, 20)}  # not the review
    assert rebuilt.superseded == {task.task_id: {V1}} and rebuilt.decisions == run.state.decisions
    assert rebuilt.is_stale(task.task_id, V1, at(10)) and rebuilt.is_stale(task.task_id, V1, at(30))
    retracted = next(e for e in run.published if isinstance(e, SampleRetracted)).sample_id
    retracted_sample = next(e for e in run.published if getattr(e, "sample_id", None) == retracted
                            and not isinstance(e, SampleRetracted))
    assert rebuilt.admit(retracted_sample) == "duplicate_id"  # a redelivery never re-adds what was retracted


def test_rollback_undoes_retractions_governing_and_decisions(run, spec, task) -> None:
    run.verdict(verdict(task, V1, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2)), 10)
    before = (dict(run.state.live[task.task_id]), dict(run.state.live_hashes), set(run.state.published),
              dict(run.state.governing))
    v2 = verdict(task, V2, cand("A", "discard", "12"), cand("B", "hard_case", "13", rank=2), cand("C", "train", "15"))
    first = on_verdict(run.state, v2, at(20), spec, PRODUCED_BY)
    on_decision(run.state, decided(task, cand("B", "hard_case", "13"), "reject"), at(5, REVIEWS), spec, PRODUCED_BY)
    assert run.state.pending > 0
    run.state.rollback()  # the batch was not published: it is read again
    assert (dict(run.state.live[task.task_id]), run.state.live_hashes, run.state.published,
            run.state.governing) == before
    assert run.state.superseded.get(task.task_id, set()) == set() and run.state.decisions == {}
    again = on_verdict(run.state, v2, at(20), spec, PRODUCED_BY)  # the same outcome the second time
    assert [e.event_id for e in [*again.retractions, *again.samples]] == [
        e.event_id for e in [*first.retractions, *first.samples]]
    assert [r.sample_id for r in first.retractions] == [sample_of("A", V1)] and len(first.samples) == 1


def test_retracted_samples_never_reach_a_training_snapshot(run, spec, task) -> None:
    from distillery_trainer.dataset import entries, manifest, repository, select

    run.verdict(verdict(task, V1, cand("A", "train", "12"), cand("B", "hard_case", "13", rank=2)), 10)
    run.verdict(verdict(task, V2, cand("A", "train", "12"), cand("B", "discard", "13", rank=2)), 20)
    samples, retracted = repository(run.published)
    assert [s.sample_id for s in samples] == [sample_of("A", V1)] and retracted == 1
    recipe = next(r for r in spec.students.values() if "math_steps" in r.units)
    man = manifest(entries(select(samples, recipe), recipe), {0: len(run.published)}, "t.samples.v1", recipe, [])
    assert man["sample_ids"] == [sample_of("A", V1)]
