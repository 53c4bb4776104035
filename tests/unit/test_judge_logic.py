"""Unit tests for distillery_judge.logic: judge version, rule floor, pools, ranking, verdicts.

Tasks come from the real example workload (BFCL simple_python / irrelevance, GSM8K).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from distillery.contracts import ids
from distillery.contracts.events import JudgedCandidate, SourceOffset, Task, Usage
from distillery.contracts.spec import Rules, judge_version, load_spec, parse_spec
from distillery_judge.logic import judge_candidate, judge_task, rank, rule_floor
from distillery_judge.scorers import reference_text
from tests.support import candidate

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"



def judge(spec, task: Task, text: str, **fields) -> JudgedCandidate:
    return judge_candidate(task, candidate(task, text, **fields), spec.units[task.unit], None)


def right_call(task: Task) -> str:
    """A call built from the task's BFCL ground truth: the first allowed value of every argument."""
    (answer,) = task.reference.tool_calls
    ((name, allowed),) = answer.items()
    args = {arg: options[0] for arg, options in allowed.items() if options[0] != ""}
    return json.dumps({"name": name, "arguments": args})


def wrong_value_call(task: Task) -> tuple[str, str]:
    """The right function with the first string argument changed to a wrong value."""
    call = json.loads(right_call(task))
    arg = next(a for a, v in call["arguments"].items() if isinstance(v, str))
    call["arguments"][arg] = "definitely not " + call["arguments"][arg]
    return json.dumps(call), f"{call['name']}.{arg}"


# --- judge_version ----------------------------------------------------------------------


def test_judge_version_is_stable_and_starts_with_the_label(spec, spec_data) -> None:
    assert judge_version(spec) == judge_version(load_spec(SPEC_PATH)) == judge_version(parse_spec(spec_data))
    assert judge_version(spec).startswith(spec.judge.label + "-")


def test_judge_version_changes_when_a_rule_changes(spec, spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["rules"]["max_chars"] += 1
    assert judge_version(parse_spec(data)) != judge_version(spec)


def test_judge_version_changes_when_a_forbidden_pattern_is_added(spec, spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["tool_call"]["rules"]["forbidden_patterns"] = ["as an ai"]
    assert judge_version(parse_spec(data)) != judge_version(spec)


def test_judge_version_changes_with_the_label(spec, spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["judge"]["label"] = "rules-v2"
    version = judge_version(parse_spec(data))
    assert version.startswith("rules-v2-") and version != judge_version(spec)


def test_judge_version_ignores_what_does_not_decide_a_verdict(spec, spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["description"] = "reworded"
    data["teachers"]["smollm2"]["batch_size"] = 3
    assert judge_version(parse_spec(data)) == judge_version(spec)


def test_judge_version_ignores_the_aggregation_timeout(spec, spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["judge"]["aggregation_timeout_s"] = 2 * spec.judge.aggregation_timeout_s
    assert judge_version(parse_spec(data)) == judge_version(spec)


# --- rule_floor ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output_format, text, ok",
    [
        ("tool_call", '{"name": "f", "arguments": {"x": 1}}', True),
        ("tool_call", '{"name": "f", "arguments": {"x": 1', False),
        ("final_answer", "3 + 4 = 7\n#### 7", True),
        ("final_answer", "The answer is 7", False),
        ("final_answer", "#### seven", False),
        ("text", "No tool fits.", True),
        ("text", "   \n ", False),
    ],
)
def test_rule_floor_format(output_format: str, text: str, ok: bool) -> None:
    assert rule_floor(text, Rules(output_format=output_format, min_chars=0))["format"] is ok


def test_rule_floor_length_bounds() -> None:
    rules = Rules(min_chars=3, max_chars=5)
    assert rule_floor("abcd", rules) == {"format": True, "min_chars": True, "max_chars": True}
    assert rule_floor("  ab  ", rules)["min_chars"] is False  # whitespace does not count
    assert rule_floor("abcdef", rules)["max_chars"] is False


def test_rule_floor_required_and_forbidden_are_named_checks() -> None:
    rules = Rules(required_fields=["####", "because"], forbidden_patterns=[r"as an ai"])
    checks = rule_floor("As an AI I think 7\n#### 7", rules)
    assert checks["required:####"] is True
    assert checks["required:because"] is False
    assert checks["forbidden:as an ai"] is False  # case-insensitive
    assert rule_floor("7 because 3+4\n####", rules)["forbidden:as an ai"] is True


# --- judge_candidate pools -------------------------------------------------------------------


def test_teacher_error_is_a_failure(spec, tasks) -> None:
    jc = judge(spec, tasks["tool_call"], "", error="TimeoutError: generation took too long")
    assert jc.pool == "failure"
    assert jc.reasons == ["teacher_error"]
    assert jc.score == 0.0


def test_broken_tool_json_is_a_failure_with_broken_output(spec, tasks) -> None:
    text = right_call(tasks["tool_call"])[:-3]  # truncated mid-object
    jc = judge(spec, tasks["tool_call"], text)
    assert jc.pool == "failure"
    assert jc.reasons == ["broken_output"]
    assert jc.checks["format"] is False


def test_truncated_output_is_tagged(spec, tasks) -> None:
    jc = judge(spec, tasks["tool_call"], right_call(tasks["tool_call"])[:-3], finish_reason="length")
    assert jc.pool == "failure"
    assert jc.reasons == ["broken_output", "truncated"]


def test_wrong_tool_arguments_are_discarded_with_reasons(spec, tasks) -> None:
    text, where = wrong_value_call(tasks["tool_call"])
    jc = judge(spec, tasks["tool_call"], text)
    assert jc.pool == "discard"
    assert "wrong_arguments" in jc.reasons
    assert f"wrong_value:{where}" in jc.reasons
    assert jc.checks["tool_call_matches_reference"] is False


def test_undeclared_argument_type_is_a_reason(spec, tasks) -> None:
    task = tasks["tool_call"]
    call = json.loads(right_call(task))
    int_arg = next(a for a, v in call["arguments"].items() if isinstance(v, int))
    call["arguments"][int_arg] = str(call["arguments"][int_arg])
    jc = judge(spec, task, json.dumps(call))
    assert jc.pool == "discard"
    assert f"wrong_type:{call['name']}.{int_arg}" in jc.reasons
    assert jc.checks["tool_call_valid"] is False


def test_correct_tool_call_goes_to_train(spec, tasks) -> None:
    task = tasks["tool_call"]
    jc = judge(spec, task, "```json\n" + right_call(task) + "\n```")
    assert jc.pool == "train"
    assert jc.reasons == ["rules_passed", "reference_match"]
    assert jc.score == 1.0
    assert [c.model_dump() for c in jc.tool_calls] == [json.loads(right_call(task))]


def test_plain_text_on_a_tool_call_unit_is_discarded_not_failed(spec, tasks) -> None:
    jc = judge(spec, tasks["tool_call"], "I am not able to look that up.")
    assert jc.pool == "discard"
    assert jc.reasons == ["no_tool_call"]


def test_no_call_on_a_no_call_task_is_a_refusal(spec, tasks) -> None:
    task = tasks["tool_boundary"]
    assert task.reference.no_call
    jc = judge(spec, task, "None of the available tools can find security guards, so I will not call one.")
    assert jc.pool == "refusal"
    assert jc.reasons == ["no_call_correct"]
    assert jc.checks["no_call"] is True


def test_answering_from_memory_on_a_no_call_task_is_not_a_refusal(spec, tasks) -> None:
    jc = judge(spec, tasks["tool_boundary"], "Try the Manhattan Guard Agency, it is the most popular one.")
    assert jc.pool == "discard"
    assert "no_decline_stated" in jc.reasons


def test_calling_a_tool_on_a_no_call_task_is_discarded(spec, tasks) -> None:
    task = tasks["tool_boundary"]
    tool = task.tools[0]
    args = {name: "New York" for name in tool.parameters["required"]}
    jc = judge(spec, task, json.dumps({"name": tool.name, "arguments": args}))
    assert jc.pool == "discard"
    assert jc.reasons[0] == "called_tool_when_none_fits"
    assert jc.checks["no_call"] is False


def test_math_wrong_answer_is_discarded(spec, tasks) -> None:
    task = tasks["math_steps"]
    wrong = str(int(task.reference.answer) + 1)
    jc = judge(spec, task, f"Some steps.\n#### {wrong}")
    assert jc.pool == "discard"
    assert jc.reasons == ["wrong_final_answer"]
    assert jc.final == wrong


def test_math_right_answer_goes_to_train(spec, tasks) -> None:
    task = tasks["math_steps"]
    jc = judge(spec, task, f"Work it out step by step.\n#### {task.reference.answer}")
    assert jc.pool == "train"
    assert jc.reasons == ["rules_passed", "reference_match"]
    assert jc.final == task.reference.answer


def test_math_without_the_final_line_is_broken_output(spec, tasks) -> None:
    jc = judge(spec, tasks["math_steps"], f"The answer is {tasks['math_steps'].reference.answer}.")
    assert jc.pool == "failure"
    assert jc.reasons == ["broken_output"]


def test_a_failed_rule_discards_with_the_rule_name(spec, tasks) -> None:
    task = tasks["math_steps"]
    unit = spec.units["math_steps"]
    unit = unit.model_copy(update={"rules": unit.rules.model_copy(update={"forbidden_patterns": ["as an ai"]})})
    jc = judge_candidate(task, candidate(task, f"As an AI: 2+2\n#### {task.reference.answer}"), unit, None)
    assert jc.pool == "discard"
    assert jc.reasons == ["rule:forbidden:as an ai"]


def test_a_right_answer_outscores_a_wrong_one(spec, tasks) -> None:
    task = tasks["math_steps"]
    right = judge(spec, task, f"#### {task.reference.answer}")
    wrong = judge(spec, task, f"#### {int(task.reference.answer) + 1}")
    assert right.score > wrong.score


def test_judged_candidate_carries_cost_and_source(spec, tasks) -> None:
    task = tasks["math_steps"]
    src = SourceOffset(topic="distill.candidates.v1", partition=3, offset=99)
    cand = candidate(task, f"#### {task.reference.answer}", usage=Usage(prompt_tokens=10, completion_tokens=4),
                     latency_s=0.5, cost_usd=0.002)
    jc = judge_candidate(task, cand, spec.units["math_steps"], src)
    assert (jc.candidate_id, jc.teacher_id, jc.source) == (cand.candidate_id, "smollm2", src)
    assert (jc.usage, jc.latency_s, jc.cost_usd) == (cand.usage, 0.5, 0.002)


# --- rank and judge_task -------------------------------------------------------------------


def jc(candidate_id: str, teacher_id: str, score: float) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=candidate_id, teacher_id=teacher_id, text="t", pool="train", rank=0,
                           score=score)


def test_rank_orders_best_first_and_numbers_from_one() -> None:
    ranked = rank([jc("c1", "a", 0.4), jc("c2", "b", 1.0), jc("c3", "c", 0.7)])
    assert [(j.candidate_id, j.rank) for j in ranked] == [("c2", 1), ("c3", 2), ("c1", 3)]


def test_rank_breaks_ties_by_teacher_then_candidate_regardless_of_input_order() -> None:
    items = [jc("c9", "zeta", 0.5), jc("c2", "alpha", 0.5), jc("c1", "alpha", 0.5)]
    expected = [("c1", "alpha"), ("c2", "alpha"), ("c9", "zeta")]
    assert [(j.candidate_id, j.teacher_id) for j in rank(items)] == expected
    assert [(j.candidate_id, j.teacher_id) for j in rank(items[::-1])] == expected


def test_judge_task_builds_a_ranked_verdict(spec, tasks) -> None:
    task = tasks["tool_call"]
    version = judge_version(spec)
    good = candidate(task, right_call(task), teacher="qwen-coder")
    bad = candidate(task, wrong_value_call(task)[0], teacher="smollm2")
    src = SourceOffset(topic="distill.candidates.v1", partition=0, offset=5)
    verdict = judge_task(task, [(bad, None), (good, src)], 2, spec, version, "judge@test")
    assert verdict.verdict_id == ids.verdict_id_for(task.task_id, version) == verdict.event_id
    assert verdict.judge_version == version
    assert verdict.missing_candidates == 0
    assert [(c.candidate_id, c.rank, c.pool) for c in verdict.candidates] == [
        (good.candidate_id, 1, "train"), (bad.candidate_id, 2, "contrastive")]
    # the wrong answer is kept against the reference, with the reason
    assert verdict.candidates[1].correction == reference_text(task)
    assert "correction:reference" in verdict.candidates[1].reasons
    assert verdict.candidates[0].source == src
    assert verdict.trace.task_id == task.task_id
    assert verdict.trace.causation_id == bad.event_id
    assert verdict.key == task.unit  # keyed by unit: the editor's per-unit state lives on one replica


def test_judge_task_counts_missing_candidates(spec, tasks) -> None:
    task = tasks["math_steps"]
    cand = candidate(task, f"#### {task.reference.answer}")
    verdict = judge_task(task, [(cand, None)], 3, spec, "v", "judge@test")
    assert verdict.missing_candidates == 2
    assert len(verdict.candidates) == 1


def test_judge_task_verdict_id_is_deterministic(spec, tasks) -> None:
    task = tasks["math_steps"]
    cand = candidate(task, "#### 1")
    first = judge_task(task, [(cand, None)], 1, spec, "v1", "judge@a")
    again = judge_task(task, [(cand, None)], 1, spec, "v1", "judge@b")
    other = judge_task(task, [(cand, None)], 1, spec, "v2", "judge@a")
    assert first.verdict_id == again.verdict_id != other.verdict_id


@pytest.mark.parametrize("call, reason", [
    ({"name": "not_declared", "arguments": {}}, "unknown_function:not_declared"),
    (None, "wrong_type:"),  # the declared function, an integer argument given as a string
])
def test_an_invalid_call_never_reaches_train_even_without_a_reference(spec, tasks, call, reason) -> None:
    task = tasks["tool_call"].model_copy(update={"reference": None})
    if call is None:
        call = json.loads(right_call(tasks["tool_call"]))
        int_arg = next(a for a, v in call["arguments"].items() if isinstance(v, int))
        call["arguments"][int_arg] = str(call["arguments"][int_arg])
    jc = judge(spec, task, json.dumps(call))
    assert jc.pool == "discard" and jc.checks["tool_call_valid"] is False
    assert any(r.startswith(reason) for r in jc.reasons), jc.reasons
    # the same task answered with a valid call still trains without a reference
    assert judge(spec, task, right_call(tasks["tool_call"])).pool == "train"
