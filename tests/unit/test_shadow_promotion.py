"""Promotion in shadow, end to end as plain functions and in-process handlers: the evaluator's per-unit
stop signals, promotions, live quality and demotions (distillery_evaluator.loop); the router's shadow
share and requests; the judge judging a shadow answer alone; the editor passing over it. The example
spec with a promotion policy for ``tiny`` (tests.support.loop_spec), no broker and no model."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from aiokafka import ConsumerRecord

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    JudgedCandidate,
    LoopDecided,
    Reference,
    StudentTrained,
    SubjectScore,
    Task,
    TaskSubmitted,
    Trace,
    Variant,
    loop_decision_id,
    new_task,
)
from distillery.runtime.wiring import In, Out
from distillery_editor.handlers import EditorDeps, on_editor_inputs
from distillery_evaluator.loop import Live, demotion, live_quality, promotions, unit_stop_signals
from distillery_evaluator.signals import Round, StopConfig
from distillery_judge.handlers import JudgeDeps, mark_judged, on_candidate_generated, on_peer_verdicts
from distillery_judge.logic import shadow_verdicts
from distillery_router.handlers import RouterDeps, on_loop_decided, on_task_submitted
from distillery_router.logic import in_share, shadow_requests
from tests.support import DEPLOYMENT, candidate, loop_spec

SPEC = loop_spec()  # tiny promoted through tiny-live, share 1.0, window 4, tolerance 0.05 (economics)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
UNIT = "math_steps"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- per-unit stop signals ------------------------------------------------------------------------------


def rnd(i: int, samples: int, accuracy: dict[str, float]) -> Round:
    return Round(f"student_{i}", samples, accuracy, {u: 0.5 for u in accuracy}, 1.0, 100.0,
                 {"reasoning": 2})


def test_marginal_gain_fires_for_the_unit_that_barely_moved_only() -> None:
    config = StopConfig(rounds=2, min_gain_per_1k=0.1)
    rounds = [rnd(0, 1000, {"flat": 0.50, "jumped": 0.30}), rnd(1, 2000, {"flat": 0.51, "jumped": 0.70})]
    fired = unit_stop_signals(rounds, {}, config)
    assert set(fired) == {"flat"}
    assert set(fired["flat"]) == {"marginal_gain"} and "below" in fired["flat"]["marginal_gain"]


def test_error_shift_fires_from_the_units_own_errors() -> None:
    config = StopConfig(rounds=2, min_gain_per_1k=0.1)
    rounds = [rnd(0, 1000, {"a": 0.3, "b": 0.3}), rnd(1, 2000, {"a": 0.7, "b": 0.7})]  # both gained a lot
    errors = {"a": {"missing_knowledge": 4, "reasoning": 1}, "b": {"reasoning": 4, "missing_knowledge": 1}}
    fired = unit_stop_signals(rounds, errors, config)
    assert fired == {"a": {"error_shift": "knowledge_share_0.8_at_or_above_0.5"}}
    # the round's recipe-wide error counts are not any one unit's
    assert unit_stop_signals(rounds, {}, config) == {}


def test_one_round_fires_no_trend_and_no_rounds_nothing() -> None:
    config = StopConfig(rounds=2, min_gain_per_1k=1000)
    assert unit_stop_signals([rnd(0, 1000, {"a": 0.5})], {}, config) == {}
    assert unit_stop_signals([], {"a": {"missing_knowledge": 3}}, config) == {}


# --- promotions ----------------------------------------------------------------------------------------


def score(unit: str, subject: str, accuracy: float, cost: float = 0.01) -> SubjectScore:
    return SubjectScore(unit=unit, subject=subject, n=20, accuracy=accuracy, mean_latency_s=0.5,
                        cost_per_request_usd=cost, mean_output_tokens=20)


def evaluation(eid: str = "evaluation_1", student: str = "tiny", variant: Variant | None = None,
               **roi: float) -> EvaluationCompleted:
    scores = [score(UNIT, "teacher:qwen-coder", 0.90), score(UNIT, "teacher:smollm2", 0.60, cost=0.001),
              score(UNIT, "student:after", 0.88), score("tool_call", "teacher:qwen-coder", 0.8),
              score("tool_call", "student:after", 0.4)]
    ledger = {"student_serves_math_steps": 1.0, "student_serves_tool_call": 0.0, "break_even_reached": 1.0,
              "break_even_requests_per_day": 500.0, **roi}
    return EvaluationCompleted(evaluation_id=eid, student_id="student_a", scores=scores, roi=ledger,
                               report_path="report.md", student=student, variant=variant,
                               produced_by="evaluator@test", produced_at=T0)


def trained(student_id: str = "student_a", student: str = "tiny") -> StudentTrained:
    return StudentTrained(student_id=student_id, student=student, version="v", artifact_dir=f"artifacts/{student_id}",
                          base_model="tiny-llama", recipe={}, manifest={}, produced_by="trainer@test")


def promote(student_id: str = "student_a", minutes: int = 0, unit: str = UNIT) -> LoopDecided:
    return LoopDecided(decision_id=loop_decision_id("promote", "tiny", unit, f"eval_{student_id}"), action="promote",
                       student="tiny", unit=unit, student_id=student_id, artifact_dir=f"artifacts/{student_id}",
                       produced_by="evaluator@test", produced_at=at(minutes))


def demote(promotion: LoopDecided, minutes: int = 5) -> LoopDecided:
    return LoopDecided(decision_id=loop_decision_id("demote", "tiny", promotion.unit, promotion.decision_id),
                       action="demote", student="tiny", unit=promotion.unit, student_id=promotion.student_id,
                       produced_by="evaluator@test", produced_at=at(minutes))


def test_a_student_serving_a_unit_and_paying_is_promoted_for_that_unit_only() -> None:
    (decision,) = promotions(evaluation(), trained(), SPEC, [], "evaluator@test")
    assert (decision.action, decision.student, decision.unit) == ("promote", "tiny", UNIT)
    assert (decision.student_id, decision.artifact_dir) == ("student_a", "artifacts/student_a")
    assert decision.figures == {"student_accuracy": 0.88, "teacher_accuracy": 0.9, "tolerance": 0.05, "share": 1.0}
    assert "qwen-coder" in decision.reason and "500" in decision.reason  # the best teacher, the break-even traffic
    # the id derives from the recipe, the unit and the evaluation: a redelivered evaluation repeats it
    assert decision.decision_id == loop_decision_id("promote", "tiny", UNIT, "evaluation_1")
    (again,) = promotions(evaluation(), trained(), SPEC, [], "evaluator@test")
    assert again.decision_id == decision.decision_id


def test_no_promotion_unless_the_student_serves_and_pays() -> None:
    assert promotions(evaluation(break_even_reached=0.0), trained(), SPEC, [], "e@t") == []
    assert promotions(evaluation(student_serves_math_steps=0.0), trained(), SPEC, [], "e@t") == []
    no_ledger = evaluation().model_copy(update={"roi": {}})
    assert promotions(no_ledger, trained(), SPEC, [], "e@t") == []


def test_no_promotion_for_a_variant_or_a_recipe_without_a_promotion_policy() -> None:
    naive = Variant(name="naive", bucket="multi_teacher")
    assert promotions(evaluation(variant=naive), trained(), SPEC, [], "e@t") == []
    assert promotions(evaluation(student="smollm2"), trained(student="smollm2"), SPEC, [], "e@t") == []


def test_a_student_already_serving_the_unit_is_not_promoted_twice_but_a_newer_one_is() -> None:
    held = promote("student_a")
    assert promotions(evaluation(), trained("student_a"), SPEC, [held], "e@t") == []
    (newer,) = promotions(evaluation("evaluation_2"), trained("student_b"), SPEC, [held], "e@t")
    assert newer.student_id == "student_b"


def test_a_student_once_demoted_for_a_unit_is_never_promoted_for_it_again() -> None:
    held = promote("student_a")
    history = [held, demote(held)]
    assert promotions(evaluation("evaluation_2"), trained("student_a"), SPEC, history, "e@t") == []
    # its other units, and a later round's student, may be
    (tools,) = promotions(evaluation("evaluation_2", student_serves_tool_call=1.0), trained("student_a"), SPEC,
                          history, "e@t")
    assert tools.unit == "tool_call"
    (later,) = promotions(evaluation("evaluation_3"), trained("student_b"), SPEC, history, "e@t")
    assert later.student_id == "student_b"


# --- live quality and demotion -------------------------------------------------------------------------

VERSION = "rules-v1-aaaa"


def math(i: int, unit: str = UNIT) -> Task:
    return Task(task_id=f"task_{unit}_{i}", unit=unit, prompt=f"what is 6 * 7 ({i})?", reference=Reference(answer="42"))


def judged(task: Task, teacher: str, pool: str, text: str, rank: int = 1) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=ids.content_id("cand", task.task_id, teacher), teacher_id=teacher, text=text,
                           pool=pool, rank=rank, score=1.0 if pool == "train" else 0.0)


def teacher_verdict(task: Task, pool: str = "train", minutes: int = 20) -> CandidatesJudged:
    best = judged(task, "qwen-coder", pool, "Six sevens.\n#### 42")
    other = judged(task, "smollm2", "contrastive", "#### 41", rank=2)
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, VERSION), task=task, judge_version=VERSION,
                            candidates=[other, best], produced_by="judge@test", produced_at=at(minutes),
                            trace=Trace(task_id=task.task_id))


def shadow_verdict(task: Task, pool: str = "train", minutes: int = 20, teacher: str = DEPLOYMENT,
                   text: str | None = None) -> CandidatesJudged:
    text = text if text is not None else ("#### 42" if pool == "train" else "#### 41")
    jc = judged(task, teacher, pool, text)
    return CandidatesJudged(verdict_id=ids.content_id("shadow", jc.candidate_id, VERSION), task=task,
                            judge_version=VERSION, candidates=[jc], shadow=True, produced_by="judge@test",
                            produced_at=at(minutes), trace=Trace(task_id=task.task_id))


PROMOTED = promote("student_a", minutes=10)


def live(verdicts: list[CandidatesJudged], window: int = 4) -> Live | None:
    return live_quality(verdicts, PROMOTED, DEPLOYMENT, window, SPEC)


def test_live_quality_compares_accepted_shares_on_the_same_tasks() -> None:
    tasks = [math(i) for i in range(4)]
    pools = ["train", "train", "contrastive", "failure"]
    verdicts = [teacher_verdict(t) for t in tasks] + [shadow_verdict(t, p) for t, p in zip(tasks, pools, strict=True)]
    assert live(verdicts) == Live(n=4, student_quality=0.5, teacher_quality=1.0, agreement=0.5, errors=1)


def test_the_best_teacher_is_the_verdicts_rank_one_candidate() -> None:
    tasks = [math(i) for i in range(2)]
    verdicts = [teacher_verdict(tasks[0]), teacher_verdict(tasks[1], pool="review")]
    verdicts += [shadow_verdict(t) for t in tasks]
    result = live(verdicts)
    assert (result.n, result.student_quality, result.teacher_quality) == (2, 1.0, 0.5)


def test_no_live_window_without_a_shadow_answer_paired_with_a_teacher_verdict() -> None:
    assert live([]) is None
    assert live([teacher_verdict(math(0))]) is None
    assert live([shadow_verdict(math(0))]) is None, "no teacher verdict for the task yet"


def test_only_shadow_answers_since_the_promotion_count() -> None:
    tasks = [math(i) for i in range(3)]
    verdicts = [teacher_verdict(t) for t in tasks]
    verdicts += [shadow_verdict(tasks[0], "contrastive", minutes=5),  # before the promotion (minute 10)
                 shadow_verdict(tasks[1], "train", minutes=10), shadow_verdict(tasks[2], "train", minutes=15)]
    result = live(verdicts)
    assert (result.n, result.student_quality) == (2, 1.0)


def test_only_tasks_with_a_teacher_verdict_count_and_other_units_and_deployments_are_ignored() -> None:
    paired, alone, other_unit = math(0), math(1), math(2, unit="tool_call")
    verdicts = [teacher_verdict(paired), teacher_verdict(other_unit),
                shadow_verdict(paired), shadow_verdict(alone, "contrastive"), shadow_verdict(other_unit, "failure"),
                shadow_verdict(paired, "failure", teacher="another-deployment")]
    result = live(verdicts)
    assert (result.n, result.student_quality, result.errors) == (1, 1.0, 0)


def test_the_window_is_the_last_shadow_answers() -> None:
    tasks = [math(i) for i in range(6)]
    pools = ["contrastive", "contrastive", "train", "train", "train", "contrastive"]
    verdicts = [teacher_verdict(t) for t in tasks]
    verdicts += [shadow_verdict(t, p, minutes=20 + i) for i, (t, p) in enumerate(zip(tasks, pools, strict=True))]
    result = live(verdicts, window=4)
    assert (result.n, result.student_quality) == (4, 0.75)
    assert live(verdicts, window=10).n == 6


def test_a_redelivered_shadow_verdict_counts_once() -> None:
    tasks = [math(i) for i in range(2)]
    good, bad = shadow_verdict(tasks[0], "train"), shadow_verdict(tasks[1], "contrastive")
    verdicts = [teacher_verdict(t) for t in tasks] + [good, bad, bad, bad]
    result = live(verdicts)
    assert (result.n, result.student_quality) == (2, 0.5)


def test_demotion_waits_for_a_full_window() -> None:
    assert demotion(PROMOTED, None, SPEC, "e@t") is None
    bad = Live(n=3, student_quality=0.0, teacher_quality=1.0, agreement=0.0, errors=3)
    assert demotion(PROMOTED, bad, SPEC, "e@t") is None  # window 4


def test_demotion_when_live_quality_trails_the_teachers_beyond_the_tolerance() -> None:
    within = Live(n=4, student_quality=0.95, teacher_quality=1.0, agreement=1.0, errors=0)  # 1.0 - 0.05
    assert demotion(PROMOTED, within, SPEC, "e@t") is None
    trailing = Live(n=4, student_quality=0.75, teacher_quality=1.0, agreement=0.75, errors=1)
    demoted = demotion(PROMOTED, trailing, SPEC, "evaluator@test")
    assert (demoted.action, demoted.student, demoted.unit) == ("demote", "tiny", UNIT)
    assert (demoted.student_id, demoted.artifact_dir) == (PROMOTED.student_id, PROMOTED.artifact_dir)
    assert demoted.decision_id == loop_decision_id("demote", "tiny", UNIT, PROMOTED.decision_id)
    assert demoted.figures == {"student_quality": 0.75, "teacher_quality": 1.0, "agreement": 0.75, "window": 4.0,
                               "errors": 1.0, "tolerance": 0.05}
    assert "0.750" in demoted.reason and "1 failed" in demoted.reason


def test_the_live_tolerance_of_the_policy_overrides_the_economics_one() -> None:
    lenient = loop_spec(live_tolerance=0.25)
    assert (lenient.live_tolerance("tiny"), SPEC.live_tolerance("tiny")) == (0.25, SPEC.economics.quality_tolerance)
    trailing = Live(n=4, student_quality=0.75, teacher_quality=1.0, agreement=0.75, errors=0)
    assert demotion(PROMOTED, trailing, lenient, "e@t") is None  # 0.75 >= 1.0 - 0.25
    assert demotion(PROMOTED, trailing, loop_spec(live_tolerance=0.2), "e@t") is not None


def test_a_full_live_window_from_verdicts_demotes() -> None:
    tasks = [math(i) for i in range(4)]
    verdicts = [teacher_verdict(t) for t in tasks]
    verdicts += [shadow_verdict(t, p) for t, p in zip(tasks, ["train", "failure", "failure", "train"], strict=True)]
    demoted = demotion(PROMOTED, live(verdicts), SPEC, "e@t")
    assert demoted is not None and demoted.figures["errors"] == 2.0 and demoted.figures["student_quality"] == 0.5


# --- the router: which tasks also go to the promoted student --------------------------------------------


def submitted(unit: str, prompt: str) -> TaskSubmitted:
    task = new_task(unit, prompt)
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id))


def test_in_share_is_deterministic_and_takes_about_its_share() -> None:
    task_ids = [f"task_{i:04d}" for i in range(1000)]
    assert all(in_share(t, "student_a", 1.0) for t in task_ids)
    drawn = [t for t in task_ids if in_share(t, "student_a", 0.3)]
    assert 240 <= len(drawn) <= 360
    assert drawn == [t for t in task_ids if in_share(t, "student_a", 0.3)]
    # a share draws a subset of a larger share's tasks, and a new student draws a fresh sample
    assert set(t for t in task_ids if in_share(t, "student_a", 0.1)) <= set(drawn)
    assert drawn != [t for t in task_ids if in_share(t, "student_b", 0.3)]


def test_a_task_of_a_promoted_unit_gets_one_shadow_request_to_the_deployment() -> None:
    event = submitted(UNIT, "What is 12 * 7?")
    promoted = {("tiny", UNIT): promote("student_a")}
    (request,) = shadow_requests(event, SPEC, promoted, "router@test")
    assert (request.teacher_id, request.strategy, request.expected_candidates) == (DEPLOYMENT, "shadow", 1)
    assert request.shadow and request.task == event.task
    assert request.max_new_tokens == SPEC.students["tiny"].max_new_tokens
    assert request.trace == Trace(task_id=event.task_id, causation_id=event.event_id)
    assert request.request_id == ids.content_id("shadow", event.task_id, DEPLOYMENT, "student_a")
    assert shadow_requests(event, SPEC, promoted, "router@test")[0].request_id == request.request_id
    assert shadow_requests(submitted("tool_call", "Weather in Oslo?"), SPEC, promoted, "router@test") == []
    assert shadow_requests(event, SPEC, {}, "router@test") == []


def test_a_task_outside_the_share_gets_no_shadow_request() -> None:
    spec = loop_spec(share=0.5)
    events = [submitted(UNIT, f"What is {i} * 7?") for i in range(40)]
    promoted = {("tiny", UNIT): promote("student_a")}
    shadowed = {e.task_id for e in events if shadow_requests(e, spec, promoted, "r@t")}
    assert shadowed == {e.task_id for e in events if in_share(e.task_id, "student_a", 0.5)}
    assert 0 < len(shadowed) < len(events)


def test_the_router_follows_promotions_and_demotions() -> None:
    deps = RouterDeps(spec=SPEC)
    event = submitted(UNIT, "What is 12 * 7?")
    teachers_only = on_task_submitted(event, deps)
    assert [o.event.teacher_id for o in teachers_only] == ["qwen-coder"] and not teachers_only[0].event.shadow

    promoted = promote("student_a")
    assert on_loop_decided(promoted, deps) == []
    outs = on_task_submitted(event, deps)
    assert [(o.event.teacher_id, o.event.shadow) for o in outs] == [("qwen-coder", False), (DEPLOYMENT, True)]
    assert outs[1].topic == deps.topics.generation_requests(DEPLOYMENT)
    other = on_task_submitted(submitted("tool_call", "Weather in Oslo?"), deps)
    assert all(not o.event.shadow for o in other)

    demoted = demote(promoted)
    on_loop_decided(demoted, deps)
    on_loop_decided(promoted, deps)  # redelivered after the demotion: changes nothing
    assert [o.event.teacher_id for o in on_task_submitted(event, deps)] == ["qwen-coder"]


# --- the judge: a shadow answer is judged alone, right away ---------------------------------------------


def math_task(name: str) -> Task:
    return Task(task_id=ids.task_id_for(UNIT, name), unit=UNIT, prompt=f"{name}: what is 6 * 7?",
                reference=Reference(answer="42"))


def record(event, offset: int, topic: str = "distill.candidates.v1") -> ConsumerRecord:
    value = event.model_dump_json().encode()
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=event.key.encode(), value=value, checksum=None, serialized_key_size=len(event.key),
                          serialized_value_size=len(value), headers=())


def shadow_candidate(task: Task, text: str, **fields):
    return candidate(task, text, DEPLOYMENT, expected=1, shadow=True, **fields)


async def test_a_shadow_candidate_is_judged_alone_and_leaves_the_teachers_task_waiting() -> None:
    deps = JudgeDeps(spec=SPEC)
    task = math_task("shadowed")
    first = candidate(task, "Six sevens.\n#### 42", "qwen-coder", expected=2)
    assert await on_candidate_generated([In(first, record(first, 0))], deps) == []

    shadow = shadow_candidate(task, "#### 42")
    (out,) = await on_candidate_generated([In(shadow, record(shadow, 1))], deps)
    verdict = out.event
    assert out.topic == deps.topics.verdicts and isinstance(verdict, CandidatesJudged) and verdict.shadow
    assert verdict.verdict_id == ids.content_id("shadow", shadow.candidate_id, deps.version)
    assert verdict.event_id == verdict.verdict_id and verdict.judge_version == deps.version
    (jc,) = verdict.candidates
    assert (jc.candidate_id, jc.teacher_id, jc.pool) == (shadow.candidate_id, DEPLOYMENT, "train")
    assert jc.source is not None and jc.source.offset == 1
    assert verdict.self_checks == {} and verdict.relation is None

    (waiting,) = deps.aggregator.open.values()  # the teachers' task still waits for its second candidate
    assert waiting.task == task and list(waiting.candidates) == [first.candidate_id]

    # a shadow verdict marks nothing judged, read back or from a peer: the teachers' task is still judged
    mark_judged(verdict, deps)
    await on_peer_verdicts([In(verdict, record(verdict, 0, topic="distill.verdicts.v1"))], deps)
    assert not deps.aggregator.judged and list(deps.aggregator.open.values()) == [waiting]
    second = candidate(task, "#### 41", "smollm2", expected=2)
    (teachers,) = await on_candidate_generated([In(second, record(second, 2))], deps)
    assert not teachers.event.shadow
    assert {c.teacher_id for c in teachers.event.candidates} == {"qwen-coder", "smollm2"}


def test_shadow_verdicts_pool_each_answer_and_keep_their_ids_on_redelivery() -> None:
    right, wrong = shadow_candidate(math_task("right"), "#### 42"), shadow_candidate(math_task("wrong"), "#### 41")
    failed = shadow_candidate(math_task("failed"), "", error="FileNotFoundError: no weights", finish_reason="error")
    shadows = [(c, None) for c in (right, wrong, failed)]
    verdicts = shadow_verdicts(shadows, SPEC, VERSION, "judge@test")
    assert all(v.shadow and len(v.candidates) == 1 for v in verdicts)
    assert [v.task for v in verdicts] == [right.task, wrong.task, failed.task]
    assert [v.candidates[0].pool for v in verdicts] == ["train", "contrastive", "failure"]
    assert [v.verdict_id for v in verdicts] == [ids.content_id("shadow", c.candidate_id, VERSION)
                                                for c in (right, wrong, failed)]
    assert [v.verdict_id for v in shadow_verdicts(shadows, SPEC, VERSION, "judge@test")] == \
        [v.verdict_id for v in verdicts]
    assert shadow_verdicts(shadows[:1], SPEC, "rules-v2-bbbb", "judge@test")[0].verdict_id != verdicts[0].verdict_id


# --- the editor: a shadow verdict is never a sample -----------------------------------------------------


def test_the_editor_makes_no_samples_of_a_shadow_verdict() -> None:
    deps = EditorDeps(spec=SPEC, produced_by="editor@test")
    task = math_task("eggs")
    jc = JudgedCandidate(candidate_id=ids.content_id("cand", task.task_id), teacher_id=DEPLOYMENT, text="#### 42",
                         pool="train", rank=1, score=1.0, final="42", reasons=["rules_passed", "reference_match"])
    shadow = CandidatesJudged(verdict_id=ids.content_id("shadow", jc.candidate_id, VERSION), task=task,
                              judge_version=VERSION, candidates=[jc], shadow=True, produced_by="judge@test",
                              trace=Trace(task_id=task.task_id))
    verdicts_topic = deps.topics.verdicts
    assert asyncio.run(on_editor_inputs([In(shadow, record(shadow, 0, verdicts_topic))], deps)) == []
    # the same answer as a teacher's verdict is a sample
    teacher = shadow.model_copy(update={"shadow": False, "verdict_id": ids.verdict_id_for(task.task_id, VERSION)})
    outs = asyncio.run(on_editor_inputs([In(teacher, record(teacher, 1, verdicts_topic))], deps))
    assert outs and all(isinstance(o, Out) and o.topic == deps.topics.samples for o in outs)
