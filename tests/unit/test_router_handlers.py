"""The router's handlers called in-process: plain events in, events out, no broker, no bus."""

from __future__ import annotations

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, JudgedCandidate, TaskSubmitted, Trace, new_task
from distillery.contracts.spec import load_spec
from distillery_router.handlers import (
    RouterDeps,
    on_candidates_judged,
    on_task_submitted,
    retries_enabled,
    uses_strategy,
)
from tests.support import ROOT

SPEC = load_spec(ROOT / "examples" / "spec.yaml")


def submitted(unit: str, prompt: str) -> TaskSubmitted:
    task = new_task(unit, prompt)
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id))


def test_a_task_becomes_one_request_per_routed_teacher_on_that_teachers_topic() -> None:
    deps = RouterDeps(spec=SPEC)
    unit = next(iter(SPEC.units))
    event = submitted(unit, "What is 12 * 7?")
    outs = on_task_submitted(event, deps)
    assert outs, "every unit of the example spec routes to at least one teacher"
    for out in outs:
        assert out.topic == deps.topics.generation_requests(out.event.teacher_id)
        assert out.event.task == event.task and out.key is None and out.partition_key == event.task_id
    state = deps.index.status(event.task_id)
    assert (state.state, state.unit, state.teachers) == ("routed", unit, tuple(o.event.teacher_id for o in outs))
    # deterministic ids: the same task routed twice gives the same requests (consumers drop the second)
    assert [o.event.request_id for o in on_task_submitted(event, deps)] == [o.event.request_id for o in outs]


def test_verdicts_teach_the_value_table_acceptance_per_teacher() -> None:
    deps = RouterDeps(spec=SPEC)
    unit = next(iter(SPEC.units))
    task = new_task(unit, "What is 3 + 4?")

    def verdict(pool: str, n: int) -> CandidatesJudged:
        cand = JudgedCandidate(candidate_id=f"cand_{n}", teacher_id="alpha", pool=pool, rank=1, score=1.0, text="7",
                               cost_usd=0.01)
        return CandidatesJudged(verdict_id=ids.content_id("v", n), task=task, judge_version="rules-v1",
                                candidates=[cand], produced_by="test", trace=Trace(task_id=task.task_id))

    assert on_candidates_judged(verdict("train", 1), deps) == []
    on_candidates_judged(verdict("discard", 2), deps)
    stats = deps.table.stats[(unit, "alpha")]
    assert (stats.judged, stats.accepted, stats.acceptance) == (2, 1, 0.5)


def test_optional_subscriptions_follow_the_spec() -> None:
    deps = RouterDeps(spec=SPEC)
    strategies = {u.routing.strategy for u in SPEC.units.values()}
    assert uses_strategy("value")(deps) == ("value" in strategies)
    assert uses_strategy("chain")(deps) == ("chain" in strategies)
    assert retries_enabled(deps) == any(u.max_attempts > 1 for u in SPEC.units.values())


def test_a_judge_replay_replaces_what_the_old_version_said_instead_of_counting_twice() -> None:
    from datetime import timedelta

    deps = RouterDeps(spec=SPEC)
    unit = next(iter(SPEC.units))
    task = new_task(unit, "What is 8 + 9?")

    def verdict(version: str, pool: str, minutes: int) -> CandidatesJudged:
        cand = JudgedCandidate(candidate_id="cand_1", teacher_id="alpha", pool=pool, rank=1, score=1.0, text="17",
                               cost_usd=0.02)
        first = CandidatesJudged(verdict_id=ids.content_id("v", version), task=task, judge_version=version,
                                 candidates=[cand], produced_by="judge@test", trace=Trace(task_id=task.task_id))
        return first.model_copy(update={"produced_at": first.produced_at + timedelta(minutes=minutes)})

    old, replayed = verdict("rules-v1", "train", 0), verdict("rules-v2", "discard", 5)
    for event in (old, replayed, old):  # the live verdict, the replay's, then the live one redelivered
        on_candidates_judged(event, deps)
    stats = deps.table.stats[(unit, "alpha")]
    assert (stats.judged, stats.accepted, round(stats.cost_usd, 4)) == (1, 0, 0.02)
