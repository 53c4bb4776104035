"""The editor's handlers called in-process: real verdicts and decisions, the example spec, a real state,
records built by hand (no broker, no bus, no model)."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    SampleCurated,
    SampleRetracted,
    SourceOffset,
    Task,
    Trace,
    decision_id_for,
)
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.wiring import DeadLetter, In, Out
from distillery_editor.governance import HUMAN
from distillery_editor.handlers import EditorDeps, on_editor_inputs, restore_state
from distillery_editor.state import EditorState
from tests.support import ROOT

SPEC = load_spec(ROOT / "examples" / "spec.yaml")
SETTINGS = ServiceSettings(topic_prefix="unit")
VERDICTS, REVIEWS, SAMPLES = SETTINGS.topics.verdicts, SETTINGS.topics.reviews, SETTINGS.topics.samples
V1, V2 = "rules-v1-aaaa", "rules-v2-bbbb"


def new_editor(state: EditorState | None = None) -> EditorDeps:
    return EditorDeps(spec=SPEC, settings=SETTINGS, topics=SETTINGS.topics, produced_by="editor@test", state=state)


def record(topic: str, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, 0, 0, None, b"", None, 0, 0, ())


def math_task(prompt: str, answer: str, split: str = "train", unit: str = "math_steps") -> Task:
    return Task(task_id=ids.content_id("task", prompt), unit=unit, prompt=prompt, reference={"answer": answer},
                split=split)


def accepted(task: Task, answer: str) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=ids.content_id("cand", task.task_id), teacher_id="qwen-coder",
                           text=f"#### {answer}", pool="train", rank=1, score=1.0, final=answer,
                           reasons=["rules_passed", "reference_match"])


def verdict(task: Task, answer: str, version: str = V1) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, version), task=task, judge_version=version,
                            candidates=[accepted(task, answer)], produced_by="judge@test",
                            trace=Trace(task_id=task.task_id))


def rejected(task: Task, jc: JudgedCandidate) -> ReviewDecided:
    return ReviewDecided(decision_id=decision_id_for(jc.candidate_id, "reject", None, "wrong", "ana"), task=task,
                         candidate=jc, judge_version=V1, verdict_id=ids.verdict_id_for(task.task_id, V1),
                         decision="reject", note="wrong", reviewer="ana", produced_by="cli@test",
                         trace=Trace(task_id=task.task_id))


def verdicts(deps: EditorDeps, *items: tuple[CandidatesJudged, int]) -> list[Out | DeadLetter]:
    return asyncio.run(on_editor_inputs([In(v, record(VERDICTS, offset)) for v, offset in items], deps))


EGGS = math_task("Janet's ducks lay 16 eggs a day. She eats 3 and bakes with 4. How many are left to sell?", "9")


def test_an_accepted_verdict_becomes_samples_that_stay_only_once_published() -> None:
    deps = new_editor()
    outs = verdicts(deps, (verdict(EGGS, "9"), 7))
    assert outs and all(isinstance(o, Out) and o.topic == SAMPLES for o in outs)
    samples = [o.event for o in outs]
    assert all(isinstance(s, SampleCurated) and s.provenance.task_id == EGGS.task_id for s in samples)
    assert {s.provenance.source for s in samples} == {SourceOffset(topic=VERDICTS, partition=0, offset=7)}
    assert all(s.produced_by == "editor@test" for s in samples)
    assert deps.state.pending > 0  # not durable until the bus publishes the batch
    deps.state.rollback()  # the batch failed: it is read again and makes the same samples
    assert [o.event.sample_id for o in verdicts(deps, (verdict(EGGS, "9"), 7))] == [s.sample_id for s in samples]
    deps.state.commit()
    assert verdicts(deps, (verdict(EGGS, "9"), 7)) == []  # a redelivery after the commit adds nothing
    held_out = math_task("What is 6 * 7?", "42", split="eval")
    assert verdicts(deps, (verdict(held_out, "42"), 8)) == []  # eval tasks never become samples


def test_unknown_units_and_crashing_logic_dead_letter_only_their_own_verdict() -> None:
    def broken_model(texts: list[str]):
        raise RuntimeError("embedding model crashed")

    # math_steps clusters its prompts (examples/spec.yaml), so its verdict reaches the broken model
    deps = new_editor(EditorState(VERDICTS, SPEC, broken_model))
    boundary = math_task("Where can I hire a security guard?", "none", unit="tool_boundary")
    unknown = math_task("Write a haiku.", "none", unit="poetry")
    unknown_dead, poison, *samples = verdicts(deps, (verdict(unknown, "x"), 1), (verdict(EGGS, "9"), 2),
                                              (verdict(boundary, "ask a licensed agency"), 3))
    assert unknown_dead == DeadLetter(record(VERDICTS, 1), "unknown_unit",
                                      "unknown unit 'poetry': not in the editor's spec")
    assert isinstance(poison, DeadLetter) and poison.record.offset == 2
    assert (poison.reason, poison.error) == ("poison", "RuntimeError: embedding model crashed")
    assert samples and all(isinstance(o, Out) and o.event.provenance.task_id == boundary.task_id for o in samples)


def test_a_human_reject_retracts_the_sample_and_a_restarted_editor_still_honours_it() -> None:
    deps = new_editor()
    (sample,) = [o.event for o in verdicts(deps, (verdict(EGGS, "9"), 0)) if o.event.pathway == "answer"]
    deps.state.commit()
    decision = rejected(EGGS, accepted(EGGS, "9"))
    outs = asyncio.run(on_editor_inputs([In(decision, record(REVIEWS, 0))], deps))
    retractions = [o.event for o in outs if isinstance(o.event, SampleRetracted)]
    assert sample.sample_id in {r.sample_id for r in retractions} and {r.judge_version for r in retractions} == {HUMAN}
    assert all(o.topic == SAMPLES for o in outs)
    deps.state.commit()
    published = [*(o.event for o in verdicts(new_editor(), (verdict(EGGS, "9"), 0))), *retractions]

    # a new judge version accepts the candidate again: a fresh editor would publish it...
    replayed = verdict(EGGS, "9", version=V2)
    assert verdicts(new_editor(), (replayed, 1))
    # ...one restored from the samples and reviews topics knows the human rejected it
    restarted = new_editor()
    restore_state(restarted, published, [(record(REVIEWS, 0), decision)])
    assert restarted.state.decision(decision.candidate.candidate_id) == decision
    assert restarted.state.live_samples(EGGS.task_id) == []
    assert verdicts(restarted, (replayed, 1)) == []


def test_a_sample_the_editor_sent_to_review_is_listed_and_a_human_accept_takes_effect() -> None:
    from distillery_cli import review  # the reviewer's side: the same functions `distillery review` runs

    data = SPEC.model_dump()
    data["units"]["math_steps"]["editor"]["token_budget"] = 8  # this answer is over budget
    deps = EditorDeps(spec=type(SPEC).model_validate(data), settings=SETTINGS, topics=SETTINGS.topics,
                      produced_by="editor@test")
    judged = verdict(EGGS, "nine eggs are left over to sell at the farmers market every single day")
    history = [o.event for o in verdicts(deps, (judged, 0))]
    deps.state.commit()
    assert history and {s.pool for s in history} == {"review"}  # the judge said train; the editor doubts

    (item,) = review.review_queue(review.latest_verdicts([judged]), set(), None, history)
    assert item.candidate_id == judged.candidates[0].candidate_id and "over token budget" in item.reasons
    decision = review.build_decision(item, "accept", "train", "long but right", "ana")
    outs = asyncio.run(on_editor_inputs([In(decision, record(REVIEWS, 0))], deps))
    deps.state.commit()
    retracted = [o.event for o in outs if isinstance(o.event, SampleRetracted)]
    admitted = [o.event for o in outs if isinstance(o.event, SampleCurated)]
    # the human's version takes the same ids, in the human's pool, with the editor's doubt kept as a note
    assert sorted(r.sample_id for r in retracted) == sorted(s.sample_id for s in admitted) == sorted(
        s.sample_id for s in history)
    assert {s.pool for s in admitted} == {"train"} and all("over token budget" in s.metadata["review_overridden"]
                                                           for s in admitted)
    assert {s.pool for s in deps.state.live_samples(EGGS.task_id)} == {"train"}
    decided = review.latest_decisions([decision])
    assert review.review_queue(review.latest_verdicts([judged]), decided, None, [*history, *retracted, *admitted]) == []
    # redelivered, the decision changes nothing
    assert asyncio.run(on_editor_inputs([In(decision, record(REVIEWS, 0))], deps)) == []
