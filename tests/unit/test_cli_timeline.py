"""``distillery timeline``: a run's closed loop in time order, from plain events (no broker)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    JudgedCandidate,
    LoopDecided,
    Reference,
    SubjectScore,
    Task,
    TaskSubmitted,
    loop_decision_id,
)
from distillery_cli.loop import evaluation_moment, live_moments, submission_bursts
from tests.support import DEPLOYMENT, loop_spec

SPEC = loop_spec(window=2)  # tiny promoted through tiny-live, a window of two shadow answers
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
UNIT, VERSION = "math_steps", "rules-v1-aaaa"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(i: int, split: str = "train") -> Task:
    return Task(task_id=f"task_{i}", unit=UNIT, prompt=f"what is 6 * 7 ({i})?", reference=Reference(answer="42"),
                split=split)


def submitted(i: int, seconds: float, split: str = "train") -> TaskSubmitted:
    return TaskSubmitted(task_id=f"task_{i}", task=task(i, split), produced_by="cli@submit", produced_at=at(seconds))


def test_submissions_are_grouped_into_bursts_and_a_redelivery_counts_once() -> None:
    events = [submitted(0, 0, "eval"), submitted(1, 1), submitted(1, 1.5), submitted(2, 2), submitted(3, 60)]
    bursts = submission_bursts(events)
    assert [(b.at, b.detail) for b in bursts] == [(at(0), "3 submitted (1 held out)"), (at(60), "1 submitted (0 held out)")]


def test_an_evaluation_shows_the_student_against_the_best_teacher_and_its_held_out_units() -> None:
    scores = [SubjectScore(unit=UNIT, subject=s, n=10, accuracy=a, mean_latency_s=0.1, cost_per_request_usd=0.0,
                           mean_output_tokens=5) for s, a in (("teacher:a", 0.9), ("teacher:b", 0.7), ("student:after", 0.6))]
    e = EvaluationCompleted(evaluation_id="evaluation_1", student_id="student_abcdef1234567890", scores=scores, roi={},
                            report_path="r", student="tiny", produced_by="evaluator@test", produced_at=at(5),
                            unit_signals={UNIT: {"marginal_gain": "gain_0_per_1k_below_1000"}})
    moment = evaluation_moment(e)
    assert moment.what == "evaluated" and "math_steps 0.600 (best teacher 0.900)" in moment.detail
    assert "math_steps stop: marginal_gain" in moment.detail


def verdict(i: int, pool: str, seconds: float, shadow: bool) -> CandidatesJudged:
    teacher = DEPLOYMENT if shadow else "qwen-coder"
    jc = JudgedCandidate(candidate_id=ids.content_id("cand", i, teacher), teacher_id=teacher, text="#### 42",
                         pool=pool, rank=1, score=1.0)
    vid = ids.content_id("shadow" if shadow else "verdict", i)
    return CandidatesJudged(verdict_id=vid, task=task(i), judge_version=VERSION, candidates=[jc], shadow=shadow,
                            produced_by="judge@test", produced_at=at(seconds))


def test_the_live_window_is_shown_every_window_shadow_answers_and_at_the_end() -> None:
    promotion = LoopDecided(decision_id=loop_decision_id("promote", "tiny", UNIT, "e1"), action="promote",
                            student="tiny", unit=UNIT, student_id="student_a", produced_by="evaluator@test",
                            produced_at=at(10))
    verdicts = [verdict(i, "train", 20 + i, shadow=False) for i in range(5)]
    pools = ["train", "discard", "failure", "train", "train"]
    verdicts += [verdict(i, pool, 30 + i, shadow=True) for i, pool in enumerate(pools)]
    verdicts.append(verdict(9, "train", 5, shadow=True))  # before the promotion: not this window's
    moments = live_moments(verdicts, [promotion], SPEC)
    assert [m.at for m in moments] == [at(31), at(33), at(34)]  # after 2, 4 and all 5 shadow answers
    assert "after 2 shadow answers: student 0.500, teachers 1.000" in moments[0].detail
    assert "after 4 shadow answers: student 0.500" in moments[1].detail and "1 failed" in moments[1].detail
    assert "after 5 shadow answers: student 1.000" in moments[2].detail  # the last two: both accepted
