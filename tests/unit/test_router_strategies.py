"""Router strategies as plain functions: experts, chain, value (Thompson sampling)."""

from __future__ import annotations

import copy
import random

import pytest

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    JudgedCandidate,
    TaskSubmitted,
    Trace,
    new_task,
)
from distillery.contracts.spec import parse_spec
from distillery.runtime.bus import Rejected
from distillery_router.feedback import ValueTable
from distillery_router.logic import next_chain_step, route

BY = "router@test"


def submitted(task):
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id))


def with_routing(spec_data, unit, routing):
    data = copy.deepcopy(spec_data)
    data["units"][unit]["routing"] = routing
    return parse_spec(data)


def test_experts_first_matching_rule_wins_and_is_recorded(spec_data, tasks):
    spec = with_routing(spec_data, "tool_call", {"strategy": "experts", "rules": [
        {"teacher": "smollm2", "prompt_matches": "never-in-a-prompt"},
        {"teacher": "qwen-coder", "has_tools": True},
        {"teacher": "smollm2"}]})
    (request,) = route(submitted(tasks["tool_call"]), spec, BY)
    assert request.teacher_id == "qwen-coder" and request.strategy == "experts"
    assert request.route_rule == "rules[1]: has_tools=True" and "expert rule 1" in request.route_reason
    assert request.expected_candidates == 1


def test_experts_uses_task_metadata_and_unit_risk(spec_data):
    spec = with_routing(spec_data, "math_steps", {"strategy": "experts", "default": "smollm2", "rules": [
        {"teacher": "qwen-coder", "difficulty": "medium", "risk": "low"}]})
    medium = new_task("math_steps", "m", metadata={"difficulty": "medium"})
    easy = new_task("math_steps", "e", metadata={"difficulty": "easy"})
    assert route(submitted(medium), spec, BY)[0].teacher_id == "qwen-coder"
    (fallback,) = route(submitted(easy), spec, BY)
    assert fallback.teacher_id == "smollm2" and fallback.route_rule == "default"


def test_experts_without_match_or_default_is_rejected(spec_data, tasks):
    spec = with_routing(spec_data, "tool_call", {"strategy": "experts", "rules": [{"teacher": "smollm2", "has_tools": False}]})
    with pytest.raises(Rejected) as info:
        route(submitted(tasks["tool_call"]), spec, BY)
    assert info.value.reason == "no_expert_rule"


def test_chain_steps_pass_every_output_forward(spec_data, tasks):
    spec = with_routing(spec_data, "math_steps", {"strategy": "chain", "teachers": ["smollm2", "qwen-coder"],
                                                  "roles": ["retrieval", "reasoning"]})
    (first,) = route(submitted(tasks["math_steps"]), spec, BY)
    assert first.teacher_id == "smollm2" and first.chain.step == 0 and first.chain.role == "retrieval"
    cand = CandidateGenerated(candidate_id="c1", request_id=first.request_id, task=first.task, teacher_id="smollm2",
                              strategy="chain", route_reason=first.route_reason, expected_candidates=1,
                              text="facts: 3 boxes of 4", cost_usd=0.01, chain=first.chain, produced_by="t")
    second = next_chain_step(cand, spec, BY)
    assert second.teacher_id == "qwen-coder" and second.chain.is_final and second.expected_candidates == 1
    assert [(s.role, s.text, s.cost_usd) for s in second.chain.prior] == [("retrieval", "facts: 3 boxes of 4", 0.01)]
    assert second.request_id != first.request_id
    final = cand.model_copy(update={"chain": second.chain, "teacher_id": "qwen-coder"})
    assert next_chain_step(final, spec, BY) is None
    failed = cand.model_copy(update={"error": "timeout"})
    assert next_chain_step(failed, spec, BY) is None, "a failed step ends the chain as a failure candidate"


def _verdict(unit, teacher, accepted, cost, i):
    jc = JudgedCandidate(candidate_id=f"c{i}", teacher_id=teacher, text="x", pool="train" if accepted else "discard",
                         rank=1, score=1.0, cost_usd=cost)
    task = new_task(unit, f"task {i}")
    return CandidatesJudged(verdict_id=f"v{i}", task=task, judge_version="j", candidates=[jc], produced_by="t")


@pytest.mark.parametrize("truth, winner", [
    ({"smollm2": (0.8, 1.0), "qwen-coder": (0.3, 1.0)}, "smollm2"),   # same cost: better acceptance wins
    ({"smollm2": (0.6, 5.0), "qwen-coder": (0.5, 1.0)}, "qwen-coder"),  # close acceptance: 5x cheaper wins
])
def test_value_strategy_converges_to_the_better_teacher(spec_data, truth, winner):
    spec = with_routing(spec_data, "tool_call", {"strategy": "value", "teachers": ["smollm2", "qwen-coder"]})
    table, world, picks = ValueTable(), random.Random(7), []
    for i in range(400):
        task = new_task("tool_call", f"synthetic {i}")
        (request,) = route(submitted(task), spec, BY, table)
        assert request.route_score is not None and "value routing" in request.route_reason
        picks.append(request.teacher_id)
        rate, cost = truth[request.teacher_id]
        table.learn(_verdict("tool_call", request.teacher_id, world.random() < rate, cost, i))
    late = picks[-100:]
    assert late.count(winner) >= 85, f"{winner} chosen {late.count(winner)}/100 times at the end"
    assert len(set(picks[:50])) == 2, "both teachers are explored early"


def test_value_table_counts_a_verdict_once():
    table = ValueTable()
    verdict = _verdict("u", "t", True, 0.5, 1)
    table.learn(verdict)
    table.learn(verdict)
    stats = table.stats[("u", "t")]
    assert (stats.judged, stats.accepted, stats.cost_per_accepted) == (1, 1, 0.5)


def test_high_risk_units_never_reach_train_on_one_signal(spec_data, tasks):
    from distillery.contracts.events import CandidateGenerated
    from distillery_judge.logic import judge_task

    data = copy.deepcopy(spec_data)
    data["units"]["tool_call"].update(risk="high")
    data["units"]["tool_boundary"].update(risk="high", second_check="review")
    spec = parse_spec(data)
    task = tasks["tool_call"]
    ref = task.reference.tool_calls[0]
    (name, args), = ref.items()
    right = '{"name": "%s", "arguments": %s}' % (name, __import__("json").dumps({k: v[0] for k, v in args.items() if v[0] != ""}))

    def judged(t, text):
        cand = CandidateGenerated(candidate_id="c", request_id="r", task=t, teacher_id="qwen-coder", strategy="single",
                                  route_reason="x", expected_candidates=1, text=text, produced_by="t")
        return judge_task(t, [(cand, None)], 1, spec, "j", "judge@test").candidates[0]

    assert judged(task, right).pool == "train", "rules and a reference match: two signals"
    no_reference = task.model_copy(update={"reference": None})
    jc = judged(no_reference, right)
    assert jc.pool == "review" and "high_risk_single_signal" in jc.reasons
    boundary = tasks["tool_boundary"]
    jc = judged(boundary.model_copy(update={"reference": None}), "None of the available functions fit.")
    assert jc.pool == "review" and "high_risk_review" in jc.reasons


def test_regeneration_is_bounded_and_carries_the_feedback(spec_data, tasks):
    from distillery.contracts.events import CandidatesJudged, JudgedCandidate
    from distillery_judge.logic import regeneration_for
    from distillery_router.logic import regenerate

    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["max_attempts"] = 2
    spec = parse_spec(data)
    task = tasks["math_steps"]
    wrong = JudgedCandidate(candidate_id="c", teacher_id="qwen-coder", text="#### 1", pool="discard", rank=1,
                            score=0.4, reasons=["wrong_final_answer"])
    verdict = CandidatesJudged(verdict_id="v1", task=task, judge_version="j", candidates=[wrong], produced_by="t")
    retry = regeneration_for(verdict, spec, "judge@test")
    assert retry.attempt == 2 and retry.teachers == ["qwen-coder"] and "wrong_final_answer" in retry.feedback
    (request,) = regenerate(retry, spec, BY)
    assert request.attempt == 2 and request.feedback == retry.feedback and "attempt 2/2" in request.route_reason
    assert request.request_id != route(submitted(task), spec, BY)[0].request_id
    # attempt 2 is the last: the judge asks no more, and the router refuses a third anyway
    assert regeneration_for(verdict.model_copy(update={"attempt": 2}), spec, "judge@test") is None
    with pytest.raises(Rejected) as info:
        regenerate(retry.model_copy(update={"attempt": 3}), spec, BY)
    assert info.value.reason == "attempt_limit"
    # accepted answers, held-out tasks and single-attempt units are never retried
    right = wrong.model_copy(update={"pool": "train"})
    assert regeneration_for(verdict.model_copy(update={"candidates": [right]}), spec, "j") is None
    held_out = task.model_copy(update={"split": "eval"})
    assert regeneration_for(verdict.model_copy(update={"task": held_out}), spec, "j") is None
    assert regeneration_for(verdict, parse_spec(spec_data), "j") is None
