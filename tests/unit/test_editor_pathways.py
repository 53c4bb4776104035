"""Each pathway and boundary sample on real teacher output (tests/data/teacher_outputs.jsonl).

The outputs were recorded from the two example teachers on example tasks
(tests/data/record_teacher_outputs.py); the real judge pools them, the editor maps them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from distillery.contracts.events import Task, ToolCall, TrajectoryStep
from distillery.contracts.spec import judge_version, parse_spec
from distillery.domain.text import facts
from distillery.domain.tools import call_tool
from distillery_cli.workload import build_workload
from distillery_editor.logic import REFUSAL, curate
from distillery_judge.logic import judge_task
from distillery_judge.scorers import reference_text
from tests.support import candidate

OUTPUTS = Path(__file__).resolve().parents[1] / "data" / "teacher_outputs.jsonl"
SOURCE = None


def recorded() -> dict[str, list[dict]]:
    """Task id -> the recorded outputs of both teachers."""
    by_task: dict[str, list[dict]] = {}
    for line in OUTPUTS.read_text().splitlines():
        row = json.loads(line)
        by_task.setdefault(row["task"]["task_id"], []).append(row)
    return by_task


def judged_and_curated(spec, rows: list[dict]):
    task = Task.model_validate(rows[0]["task"])
    cands = [(candidate(task, r["text"], r["teacher_id"], expected=len(rows), confidence=r["confidence"],
                        finish_reason=r["finish_reason"]), None) for r in rows]
    verdict = judge_task(task, cands, len(rows), spec, judge_version(spec), "judge@test")
    from distillery.contracts.events import SourceOffset

    source = SourceOffset(topic="distill.verdicts.v1", partition=0, offset=7)
    return task, verdict, curate(verdict, source, spec, "editor@test")


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[dict]]:
    return recorded()


def test_every_recorded_output_is_pooled_and_every_accepted_one_becomes_a_sample(spec, outputs) -> None:
    pools_seen = set()
    for rows in outputs.values():
        task, verdict, samples = judged_and_curated(spec, rows)
        pools_seen |= {jc.pool for jc in verdict.candidates}
        accepted = {jc.pool for jc in verdict.candidates if jc.pool in ("train", "refusal", "hard_case", "contrastive")}
        assert {s.pool for s in samples if s.pathway == "answer"} == accepted
        for sample in samples:
            assert sample.tokens_before > 0 and 0 < sample.tokens_after
            assert sample.provenance.task_id == task.task_id and sample.score is not None
    assert {"train", "refusal", "failure"} <= pools_seen


def test_answer_pathway_on_real_tool_calls_is_the_canonical_call(spec, outputs) -> None:
    for rows in outputs.values():
        if rows[0]["task"]["unit"] != "tool_call":
            continue
        task, verdict, samples = judged_and_curated(spec, rows)
        for sample in samples:
            jc = next(c for c in verdict.candidates if c.candidate_id == sample.provenance.candidate_id)
            call = json.loads(sample.final)
            if sample.pool == "contrastive":  # the teacher's wrong output is the contrast, the reference the final
                assert sample.final == reference_text(task) and sample.contrast == jc.text.strip()
                continue
            assert call["name"] == jc.tool_calls[0].name and sample.tool_steps[0]["tool"] == call["name"]
            assert sample.tokens_after <= sample.tokens_before


def test_refusal_samples_say_what_was_missing_why_to_stop_and_what_instead(spec, outputs) -> None:
    refusals = [s for rows in outputs.values() for s in judged_and_curated(spec, rows)[2] if s.pool == "refusal"]
    assert refusals
    for sample in refusals:
        assert sample.final == REFUSAL
        missing, why, instead = sample.limits.splitlines()[:3]
        assert missing.startswith("Missing:") and why.startswith("Why stop:") and instead.startswith("Instead:")


def test_contrastive_samples_keep_the_wrong_answer_the_correction_and_the_reason(spec, outputs) -> None:
    seen = 0
    for rows in outputs.values():
        task, verdict, samples = judged_and_curated(spec, rows)
        for sample in (s for s in samples if s.pool == "contrastive"):
            seen += 1
            jc = next(c for c in verdict.candidates if c.candidate_id == sample.provenance.candidate_id)
            assert sample.pathway == "answer" and sample.final == reference_text(task) == jc.correction
            assert sample.contrast and sample.contrast != sample.final
            assert sample.limits.startswith("Wrong because: ")
    assert seen, "the recorded teachers got some answers wrong"


def test_process_pathway_compresses_real_prose_without_losing_a_number(spec, outputs) -> None:
    prose = next(r for rows in outputs.values() for r in rows
                 if r["task"]["unit"] == "math_steps" and r["teacher_id"] == "smollm2" and "weight" in r["text"])
    task = Task.model_validate(prose["task"])
    text = prose["text"] + f"\n#### {task.reference.answer}"  # as if it had ended right
    _, verdict, samples = judged_and_curated(spec, [{**prose, "text": text}])
    (process,) = [s for s in samples if s.pathway == "process"]
    assert process.pool == "train" and process.rationale
    assert facts(prose["text"]) <= facts("\n".join([process.rationale, process.limits, process.final]))
    assert process.tokens_after < process.tokens_before  # filler and repetition went


def test_style_pathway_tidies_what_is_safe_and_sends_the_rest_to_review(spec_data, outputs) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["tool_boundary"]["pathways"] = ["answer", "style"]
    data["units"]["tool_boundary"]["editor"] = {"style": {"tone": "plain", "max_sentences": 2,
                                                          "required_phrases": ["will not call"]}}
    spec = parse_spec(data)
    rows = next(r for r in outputs.values() if r[0]["task"]["unit"] == "tool_boundary")
    _, _, samples = judged_and_curated(spec, rows)
    (style,) = [s for s in samples if s.pathway == "style"]
    assert style.style_constraints == ["at most 2 sentences", "says 'will not call'", "plain tone"]
    assert style.pool == "refusal" and style.final == REFUSAL  # the canonical refusal meets them

    data["units"]["tool_boundary"]["editor"]["style"]["required_phrases"] = ["per company policy"]
    _, _, samples = judged_and_curated(parse_spec(data), rows)
    (style,) = [s for s in samples if s.pathway == "style"]
    assert style.pool == "review" and style.metadata["review_reason"] == "style: missing phrase 'per company policy'"


def test_tool_trajectory_pathway_keeps_trigger_call_observation_and_recovery(spec, tasks) -> None:
    task = Task.model_validate(build_workload(1, 0, units=["tool_use"])[0])
    unit = spec.units["tool_use"]
    bad = ToolCall(name="convert_units", arguments={"value": 5, "to_unit": "km"})
    good = ToolCall(name="convert_units", arguments={"value": 5, "from_unit": "mile", "to_unit": "km"})
    steps = []
    for call in (bad, good):  # really run: the first call is invalid, the second recovers
        observation, error = call_tool(call, unit.tools, unit.tool_timeout_s)
        steps.append(TrajectoryStep(tool=call.name, arguments=call.arguments, observation=observation, error=error))
    text = f"FINAL: {task.reference.answer}"  # the answer the task's reference expects
    cand = candidate(task, text, "qwen-coder", trajectory=steps)
    verdict = judge_task(task, [(cand, None)], 1, spec, judge_version(spec), "judge@test")
    samples = curate(verdict, None, spec, "editor@test")
    (traj,) = [s for s in samples if s.pathway == "tool_trajectory"]
    first, second = traj.tool_steps
    assert first["error"].startswith("invalid_arguments") and first["trigger"].startswith("needs ")
    assert second["recovery_of"] == 0 and second["observation"] and second["error"] is None
    assert traj.pool == "train" and traj.final == f"#### {task.reference.answer}"  # closure


def test_confidence_tiers_send_train_samples_where_the_spec_says(spec_data, tasks) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["editor"] = {"tiers": {"high": 0.8, "medium": 0.5, "medium_pool": "hard_case",
                                                       "low_pool": "review"}, "hard_case_weight": 3}
    spec = parse_spec(data)
    task = tasks["math_steps"]
    by_confidence = {}
    for confidence in (0.95, 0.6, 0.3):
        cand = candidate(task, f"#### {task.reference.answer}", f"t{confidence}", confidence=confidence)
        verdict = judge_task(task, [(cand, None)], 1, spec, judge_version(spec), "judge@test")
        (sample,) = curate(verdict, None, spec, "editor@test")
        by_confidence[confidence] = (sample.tier, sample.pool, sample.weight)
    assert by_confidence == {0.95: ("high", "train", 1.0), 0.6: ("medium", "hard_case", 3.0), 0.3: ("low", "review", 1.0)}


def test_a_sample_over_the_token_budget_goes_to_review_untruncated(spec_data, tasks) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["editor"] = {"token_budget": 8}
    spec = parse_spec(data)
    task = tasks["math_steps"]
    text = "Add 194 and 490 to get 684.\nSubtract 150 to get 534.\nDouble it to get 1068.\n" + f"#### {task.reference.answer}"
    cand = candidate(task, text, "qwen-coder")
    verdict = judge_task(task, [(cand, None)], 1, spec, judge_version(spec), "judge@test")
    process = next(s for s in curate(verdict, None, spec, "editor@test") if s.pathway == "process")
    assert process.pool == "review" and process.tokens_after > 8
    assert process.metadata["review_reason"] == f"over token budget: {process.tokens_after} > 8"
    assert "1068" in process.rationale  # kept whole, never cut


def test_an_accepted_answer_that_does_not_parse_in_the_units_form_goes_to_review(spec, tasks) -> None:
    from distillery.contracts.events import CandidatesJudged, JudgedCandidate, Trace

    task = tasks["tool_call"]
    jc = JudgedCandidate(candidate_id="c1", teacher_id="qwen-coder", text="call get_news for Bitcoin", pool="train",
                         rank=1, score=0.9)  # e.g. a human accepted it, or a lenient judge version
    verdict = CandidatesJudged(verdict_id="v1", task=task, judge_version="j", candidates=[jc], produced_by="j",
                               trace=Trace(task_id=task.task_id))
    (sample,) = curate(verdict, None, spec, "editor@test")
    assert sample.pool == "review"
    assert sample.metadata["review_reason"] == "unparseable: no tool call in the answer of a tool_call unit"


def test_a_contrastive_candidate_without_a_correction_goes_to_review(spec, tasks) -> None:
    from distillery.contracts.events import CandidatesJudged, JudgedCandidate, Trace

    task = tasks["math_steps"]
    jc = JudgedCandidate(candidate_id="c1", teacher_id="smollm2", text="#### 3", pool="contrastive", rank=1,
                         score=0.2, final="3")  # no correction: nothing to learn the right answer from
    verdict = CandidatesJudged(verdict_id="v1", task=task, judge_version="j", candidates=[jc], produced_by="j",
                               trace=Trace(task_id=task.task_id))
    (sample,) = curate(verdict, None, spec, "editor@test")
    assert sample.pool == "review" and sample.metadata["review_reason"] == "contrastive without a correction"
