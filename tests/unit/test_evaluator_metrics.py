"""Evaluator metrics: refusal correctness, breakdowns, agreement, the ROI ledger and attribution intervals."""

from __future__ import annotations

from distillery.contracts.events import EvaluationCompleted, Reference, SubjectScore, Task, Variant
from distillery_evaluator import attribution
from distillery_evaluator.logic import Output, agreement, best_teachers, breakdown, roi, score, unit_metrics

DECLINE = "None of the available functions can answer this."
CALL = '{"name": "area", "arguments": {"r": 2}}'


def boundary(i: int) -> Task:
    return Task(task_id=f"b{i}", unit="tool_boundary", prompt=f"weather {i}?", reference=Reference(no_call=True),
                metadata={"difficulty": "easy", "scenario": "irrelevance"})


def math(i: int, answer: str = "4", difficulty: str = "easy") -> Task:
    return Task(task_id=f"m{i}", unit="math_steps", prompt=f"2+2 ({i})", reference=Reference(answer=answer),
                metadata={"difficulty": difficulty, "scenario": "word_problem"})


def out(task: Task, subject: str, text: str, cost: float = 0.0, latency: float = 0.1) -> Output:
    return Output(task, subject, text, latency, cost, 5)


def metric(rows, unit, subject, name):
    return next(r["value"] for r in rows if (r["unit"], r["subject"], r["metric"]) == (unit, subject, name))


def test_refusal_correctness_counts_stopping_when_it_should_and_only_then(spec) -> None:
    outputs = [out(boundary(0), "s", DECLINE), out(boundary(1), "s", CALL),  # one right stop, one missed
               out(math(0), "s", DECLINE), out(math(1), "s", "2+2\n#### 4")]  # one false stop
    rows = unit_metrics(outputs, spec)
    assert metric(rows, "all", "s", "refusal_recall") == 0.5
    assert metric(rows, "all", "s", "refusal_precision") == 0.5
    assert metric(rows, "math_steps", "s", "exact_match") == 0.5
    assert metric(rows, "tool_boundary", "s", "refusal_correctness") == 0.5


def test_breakdown_by_difficulty_and_scenario(spec) -> None:
    outputs = [out(math(0), "s", "#### 4"), out(math(1, difficulty="hard"), "s", "#### 5"),
               out(math(2, difficulty="hard"), "s", "#### 4")]
    rows = {(r["dimension"], r["value"]): r for r in breakdown(outputs, spec)}
    assert rows[("difficulty", "easy")]["accuracy"] == 1.0 and rows[("difficulty", "hard")]["accuracy"] == 0.5
    assert rows[("scenario", "word_problem")]["n"] == 3


def test_agreement_is_with_the_best_teacher_in_the_units_own_form(spec) -> None:
    outputs = [out(math(0), "teacher:a", "#### 4", cost=0.01), out(math(1), "teacher:a", "#### 7", cost=0.01),
               out(math(0), "teacher:b", "#### 5", cost=0.001), out(math(1), "teacher:b", "#### 5", cost=0.001),
               out(math(0), "student:after", "so 4\n#### 4.0"), out(math(1), "student:after", "#### 7")]
    best = best_teachers(score(outputs, spec))
    assert best == {"math_steps": "teacher:a"}
    # the student copies teacher a's wrong answer on m1 too: agreement 1.0 while accuracy is 0.5
    assert agreement(outputs, spec, best) == {"math_steps": 1.0}


def test_the_ledger_has_break_even_traffic_and_latency(spec) -> None:
    scores = [SubjectScore(unit="math_steps", subject="teacher:a", n=4, accuracy=0.8, mean_latency_s=2.0,
                           cost_per_request_usd=0.01, mean_output_tokens=50),
              SubjectScore(unit="math_steps", subject="student:after", n=4, accuracy=0.8, mean_latency_s=0.1,
                           cost_per_request_usd=0.001, mean_output_tokens=40)]
    ledger = roi(scores, {"teacher_generation": 9.0, "human_review": 0.0, "training": 0.0}, spec)
    econ = spec.economics
    assert ledger["saving_per_request_usd"] == 0.009
    assert ledger["break_even_requests"] == 1000.0
    assert ledger["break_even_requests_per_day"] == round(1000 / econ.horizon_days, 1)
    assert ledger["break_even_reached"] == float(econ.requests_per_day >= 1000 / econ.horizon_days)
    assert (ledger["teacher_latency_s"], ledger["student_latency_s"]) == (2.0, 0.1)


def evaluation(name: str, seed: int, correct: dict[str, bool]) -> EvaluationCompleted:
    return EvaluationCompleted(evaluation_id=f"e{name}{seed}", student_id=f"s{name}{seed}", scores=[], roi={},
                               report_path="", samples=10, correct=correct, produced_by="test",
                               variant=Variant(name=name, experiment_id="x", members=4))


def test_attribution_differences_carry_a_bootstrap_interval() -> None:
    tasks = {f"m{i}": "math_steps" for i in range(20)}
    full = [evaluation("full", s, {t: i < 16 for i, t in enumerate(tasks)}) for s in range(2)]
    naive = [evaluation("naive", s, {t: i < 6 + s for i, t in enumerate(tasks)}) for s in range(2)]
    rows = {(r["unit"], r["variant"]): r for r in attribution.table(full + naive, tasks)}
    row = rows[("math_steps", "naive")]
    assert row["diff"] == round((6.5 - 16) / 20, 4) and row["n_seeds"] == 2
    assert row["ci_low"] <= row["diff"] <= row["ci_high"] < 0  # clearly worse: the interval excludes 0
    assert rows[("all", "full")]["diff"] == 0.0
    assert attribution.complete(full + naive, 4) and not attribution.complete(full, 4)


def test_rounds_come_from_the_recipes_evaluations_in_order_and_feed_the_signals() -> None:
    from distillery_evaluator.handlers import rounds_of
    from distillery_evaluator.signals import StopConfig, stop_signals

    def main_round(i: int, samples: int, acc: float) -> EvaluationCompleted:
        after = SubjectScore(unit="math_steps", subject="student:after", n=10, accuracy=acc, mean_latency_s=0.1,
                             cost_per_request_usd=0.0, mean_output_tokens=5)
        return EvaluationCompleted(evaluation_id=f"e{i}", student_id=f"s{i}", scores=[after], report_path="",
                                   roi={"offline_total_usd": 1.0, "teacher_cost_horizon_usd": 100.0},
                                   samples=samples, produced_by="test")

    history = [main_round(0, 1000, 0.50), main_round(1, 2000, 0.505), main_round(1, 2000, 0.505),
               main_round(2, 3000, 0.51)]
    rounds = rounds_of(history)
    assert [r.samples for r in rounds] == [1000, 2000, 3000]  # a redelivered evaluation counts once
    fired = {s.name: s for s in stop_signals(rounds, StopConfig()) if s.fired}
    assert set(fired) == {"marginal_gain"} and fired["marginal_gain"].advice


def test_every_teacher_is_scored_on_every_held_out_task_and_a_missing_answer_counts_wrong(spec) -> None:
    """tool_boundary is a competition of smollm2 and qwen-coder: both are expected on every task.
    qwen-coder's candidate is missing on one task (a judge timeout once dropped such late answers
    from the score) and failed on another; both count wrong, with their reasons."""
    from distillery_evaluator.logic import teacher_outputs
    from tests.support import candidate

    tasks = [boundary(i).model_copy(update={"split": "eval"}) for i in range(4)]
    cands = [candidate(t, DECLINE, "smollm2", expected=2) for t in tasks]
    cands += [candidate(tasks[0], DECLINE, "qwen-coder", expected=2),
              candidate(tasks[1], "", "qwen-coder", expected=2, error="TimeoutError: server busy", latency_s=3.0),
              candidate(tasks[3], DECLINE, "qwen-coder", expected=2),
              # a second attempt and a training-split answer are not the held-out score
              candidate(tasks[2], DECLINE, "qwen-coder", expected=2, attempt=2),
              candidate(tasks[2].model_copy(update={"split": "train"}), DECLINE, "qwen-coder", expected=2)]
    outputs = teacher_outputs(cands, tasks, spec)
    scores = {s.subject: s for s in score(outputs, spec)}
    assert scores["teacher:smollm2"].n == scores["teacher:qwen-coder"].n == 4
    assert scores["teacher:smollm2"].accuracy == 1.0
    # attempt 2 on task 2 is still qwen's only answer to it, so it is used; task 1 failed
    assert scores["teacher:qwen-coder"].accuracy == 0.75
    assert scores["teacher:qwen-coder"].unanswered == {"error: TimeoutError": 1}
    without = teacher_outputs([c for c in cands if not (c.task.task_id == "b2" and c.teacher_id == "qwen-coder")],
                              tasks, spec)
    qwen = next(s for s in score(without, spec) if s.subject == "teacher:qwen-coder")
    assert qwen.n == 4 and qwen.accuracy == 0.5
    assert qwen.unanswered == {"error: TimeoutError": 1, "no answer recorded": 1}
    assert qwen.mean_latency_s == 0.0  # latency is over answered tasks: the failed one has no answer
