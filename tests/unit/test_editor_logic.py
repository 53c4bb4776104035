"""Unit tests for distillery_editor.logic and the dedup of distillery_editor.state: pathways, finals, compression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, JudgedCandidate, SourceOffset, Task, ToolCall, Trace
from distillery_cli.workload import build_workload
from distillery_editor.logic import REFUSAL, curate
from distillery_editor.state import EditorState

ROOT = Path(__file__).resolve().parents[2]
JUDGE_VERSION = "rules-v1-0123456789"
SOURCE = SourceOffset(topic="distill.verdicts.v1", partition=1, offset=17)
MATH_TEXT = "Sure! Let me help.\n194 * 490 = 95060\n194 * 150 = 29100\n95060 - 29100 = 65960\n#### 65960"


@pytest.fixture(scope="module")
def workload() -> list[Task]:
    return [Task.model_validate(line) for line in build_workload(2, 1)]


@pytest.fixture(scope="module")
def tasks(workload) -> dict[str, Task]:
    out: dict[str, Task] = {}
    for task in workload:
        if task.split == "train":
            out.setdefault(task.unit, task)
    return out


def judged(cid: str, pool: str, text: str, rank: int = 1, teacher: str = "qwen-coder", **fields) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=cid, teacher_id=teacher, text=text, pool=pool, rank=rank,
                           score=1.0 if pool in ("train", "refusal") else 0.4, **fields)


def verdict(task: Task, *candidates: JudgedCandidate) -> CandidatesJudged:
    return CandidatesJudged(
        verdict_id=ids.verdict_id_for(task.task_id, JUDGE_VERSION), task=task, judge_version=JUDGE_VERSION,
        candidates=list(candidates), produced_by="judge@test", trace=Trace(task_id=task.task_id),
    )


def curate_one(spec, v: CandidatesJudged):
    return curate(v, SOURCE, spec, "editor@test")


def tool_call_verdict(task: Task) -> tuple[CandidatesJudged, dict]:
    (answer,) = task.reference.tool_calls
    ((name, allowed),) = answer.items()
    args = {arg: options[0] for arg, options in allowed.items() if options[0] != ""}
    text = "Sure! Here is the call:\n```json\n" + json.dumps({"name": name, "arguments": args}, indent=4) + "\n```"
    jc = judged("cand_tool", "train", text, tool_calls=[ToolCall(name=name, arguments=args)])
    return verdict(task, jc), {"name": name, "arguments": args}


def math_verdict(task: Task, text: str = MATH_TEXT) -> CandidatesJudged:
    return verdict(task, judged("cand_math", "train", text, final=task.reference.answer))


# --- pathways and finals ----------------------------------------------------------------------


def test_tool_call_sample_has_the_canonical_call_as_final(spec, tasks) -> None:
    v, call = tool_call_verdict(tasks["tool_call"])
    (sample,) = curate_one(spec, v)
    assert sample.pathway == "answer" and sample.pool == "train"
    assert json.loads(sample.final) == call
    assert sample.final == json.dumps(call, ensure_ascii=False)  # no fences, no prose
    assert sample.rationale == "" and sample.limits == ""
    assert sample.tool_steps == [{"tool": call["name"], "arguments": call["arguments"]}]
    assert sample.tools == tasks["tool_call"].tools


def test_math_gets_answer_and_process_samples_with_a_marked_final(spec, tasks) -> None:
    task = tasks["math_steps"]
    samples = {s.pathway: s for s in curate_one(spec, math_verdict(task))}
    assert set(samples) == {"answer", "process"}
    assert samples["answer"].final == samples["process"].final == f"#### {task.reference.answer}"
    assert samples["answer"].rationale == ""
    assert samples["process"].rationale == "194 * 490 = 95060\n194 * 150 = 29100\n95060 - 29100 = 65960"
    assert samples["answer"].content_hash != samples["process"].content_hash


def test_process_pathway_is_skipped_when_there_are_no_steps(spec, tasks) -> None:
    task = tasks["math_steps"]
    samples = curate_one(spec, math_verdict(task, f"Sure!\n#### {task.reference.answer}"))
    assert [s.pathway for s in samples] == ["answer"]


def test_refusal_samples_carry_the_canonical_final_and_a_boundary(spec, tasks) -> None:
    task = tasks["tool_boundary"]
    finals = set()
    for text in ("No tool fits: these only search lawyers.", "I can't help with that using these functions!"):
        (sample,) = curate_one(spec, verdict(task, judged("cand_ref", "refusal", text)))
        assert sample.pool == "refusal"
        assert sample.limits.strip()
        assert all(tool.name in sample.limits for tool in task.tools)
        finals.add(sample.final)
    assert finals == {REFUSAL}


def test_eval_split_verdicts_never_become_samples(spec, workload) -> None:
    held_out = next(t for t in workload if t.split == "eval" and t.unit == "math_steps")
    assert curate_one(spec, math_verdict(held_out)) == []


def test_unknown_units_yield_no_samples(spec, tasks) -> None:
    task = tasks["math_steps"].model_copy(update={"unit": "poetry"})
    assert curate_one(spec, math_verdict(task)) == []


def test_discard_and_failure_candidates_never_become_samples(spec, tasks) -> None:
    task = tasks["math_steps"]
    v = verdict(task, judged("c1", "discard", "#### 1", rank=1), judged("c2", "failure", "oops", rank=2))
    assert curate_one(spec, v) == []


def test_only_the_best_candidate_of_a_pool_becomes_a_sample(spec, tasks) -> None:
    task = tasks["math_steps"]
    v = verdict(task, judged("c_second", "train", "2 + 2 = 4\n#### 4", rank=2, final="4"),
                judged("c_first", "train", "1 + 3 = 4\n#### 4", rank=1, final="4", teacher="smollm2"))
    samples = curate_one(spec, v)
    assert {s.provenance.candidate_id for s in samples} == {"c_first"}


def test_sample_ids_are_deterministic_and_provenance_is_complete(spec, tasks) -> None:
    task = tasks["math_steps"]
    v = math_verdict(task)
    first, again = curate_one(spec, v), curate(v, SOURCE, spec, "editor@other")
    assert [s.sample_id for s in first] == [s.sample_id for s in again]
    for sample in first:
        assert sample.sample_id == ids.sample_id_for("cand_math", JUDGE_VERSION, sample.pathway) == sample.event_id
        prov = sample.provenance
        assert (prov.task_id, prov.candidate_id, prov.teacher_id) == (task.task_id, "cand_math", "qwen-coder")
        assert (prov.judge_version, prov.verdict_id, prov.source) == (JUDGE_VERSION, v.verdict_id, SOURCE)
        assert sample.trace.task_id == task.task_id and sample.trace.causation_id == v.event_id
        assert sample.metadata["difficulty"] == task.metadata["difficulty"]
        assert sample.prompt == task.prompt and sample.unit == "math_steps"


def test_hard_case_candidates_become_samples_with_the_evidence_of_other_teachers(spec, tasks) -> None:
    task = tasks["math_steps"]
    evidence = ["smollm2 also checked the units"]
    v = verdict(task, judged("c_hard", "hard_case", MATH_TEXT, final=task.reference.answer, evidence=evidence))
    samples = curate_one(spec, v)
    assert {s.pool for s in samples} == {"hard_case"} and len(samples) == 2
    assert all(s.evidence == evidence for s in samples)
    assert all("decided_by" not in s.metadata for s in samples)


def test_a_human_accepted_candidate_is_marked_as_decided_by_a_human(spec, tasks) -> None:
    task = tasks["math_steps"]
    v = verdict(task, judged("c_h", "train", MATH_TEXT, final=task.reference.answer, reasons=["human_accept"]))
    assert all(s.metadata["decided_by"] == "human" for s in curate_one(spec, v))


# --- dedup (EditorState.admit) -------------------------------------------------------------------------


@pytest.fixture
def samples(spec, tasks):
    return {s.pathway: s for s in curate_one(spec, math_verdict(tasks["math_steps"]))}


def test_dedup_admits_new_samples_and_keeps_them_pending(samples) -> None:
    state = EditorState(SOURCE.topic)
    assert state.admit(samples["answer"]) is None
    assert state.admit(samples["process"]) is None
    assert state.pending > 0
    assert {s.sample_id for s in state.live_samples(samples["answer"].provenance.task_id)} == {
        samples["answer"].sample_id, samples["process"].sample_id}


def test_dedup_drops_a_pending_duplicate_within_the_batch(samples) -> None:
    state = EditorState(SOURCE.topic)
    state.admit(samples["answer"])
    assert state.admit(samples["answer"]) == "duplicate_id"
    same_content = samples["answer"].model_copy(update={"sample_id": "sample_other"})
    assert state.admit(same_content) == "duplicate_content"
    assert len(state.live_samples(samples["answer"].provenance.task_id)) == 1


def test_dedup_commit_remembers_across_batches(samples) -> None:
    state = EditorState(SOURCE.topic)
    state.admit(samples["answer"])
    state.commit()
    assert state.pending == 0
    state.rollback()  # nothing pending: a later failed batch must not undo a durable one
    assert state.admit(samples["answer"]) == "duplicate_id"
    assert state.admit(samples["answer"].model_copy(update={"sample_id": "sample_other"})) == "duplicate_content"


def test_dedup_rollback_forgets_the_failed_batch(samples) -> None:
    state = EditorState(SOURCE.topic)
    state.admit(samples["answer"])
    state.rollback()
    assert state.pending == 0 and state.published == set() and state.live_hashes == {}
    assert state.admit(samples["answer"]) is None  # the batch is read again and admitted again


def test_dedup_rebuilds_state_from_the_samples_topic(samples) -> None:
    state = EditorState(SOURCE.topic)
    state.rebuild_samples([samples["process"]])
    assert state.pending == 0
    assert state.admit(samples["process"]) == "duplicate_id"
    assert state.admit(samples["answer"]) is None


def test_same_content_from_another_teacher_is_a_content_duplicate(spec, tasks) -> None:
    task = tasks["math_steps"]
    a = curate_one(spec, verdict(task, judged("cand_a", "train", MATH_TEXT, final=task.reference.answer)))
    b = curate_one(spec, verdict(task, judged("cand_b", "train", MATH_TEXT.upper(), teacher="smollm2",
                                               final=task.reference.answer)))
    state = EditorState(SOURCE.topic)
    assert [state.admit(s) for s in a] == [None, None]
    assert [state.admit(s) for s in b] == ["duplicate_content", "duplicate_content"]


def test_the_same_question_under_other_tools_is_not_a_content_duplicate(spec) -> None:
    from distillery.contracts.events import ToolSpec, new_task

    prompt = "What's the mass of an electron?"
    samples = []
    for tool in ("get_weather", "book_flight"):
        task = new_task("tool_boundary", prompt, tools=[ToolSpec(name=tool)], reference={"no_call": True})
        (sample,) = curate_one(spec, verdict(task, judged(f"cand_{tool}", "refusal", "No tool fits.")))
        samples.append(sample)
    assert samples[0].tools != samples[1].tools
    state = EditorState(SOURCE.topic)
    assert [state.admit(s) for s in samples] == [None, None]
