"""The judge's handlers called in-process: real candidates and records, the example spec's rules-only
judge (no model loads), no broker and no bus."""

from __future__ import annotations

import copy
import time

import yaml
from aiokafka import ConsumerRecord

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    Chain,
    Reference,
    RegenerationRequested,
    Task,
)
from distillery.contracts.spec import load_spec, parse_spec
from distillery.runtime.wiring import DeadLetter, In
from distillery_judge.handlers import (
    JudgeDeps,
    JudgeSettings,
    after_rebuild,
    flush_expired_once,
    mark_judged,
    on_candidate_generated,
    on_peer_verdicts,
)
from tests.support import ROOT, candidate

SPEC = load_spec(ROOT / "examples" / "spec.yaml")


def retrying_spec():
    """The example spec with a second attempt for math answers."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text()))
    data["units"]["math_steps"]["max_attempts"] = 2
    return parse_spec(data)


def math_task(name: str, answer: str = "42") -> Task:
    return Task(task_id=ids.task_id_for("math_steps", name), unit="math_steps", prompt=f"{name}: what is 6 * 7?",
                reference=Reference(answer=answer))


def batch(*cands: CandidateGenerated, first_offset: int = 0) -> list[In[CandidateGenerated]]:
    return [In(c, record(c, first_offset + i)) for i, c in enumerate(cands)]


def record(event: CandidateGenerated, offset: int, partition: int = 0) -> ConsumerRecord:
    value = event.model_dump_json().encode()
    return ConsumerRecord(topic="distill.candidates.v1", partition=partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=event.key.encode(), value=value, checksum=None,
                          serialized_key_size=len(event.key), serialized_value_size=len(value), headers=())


def events_of(outs, model):
    return [o.event for o in outs if isinstance(o.event, model)]


async def test_a_complete_task_is_judged_into_one_verdict_on_the_verdicts_topic() -> None:
    deps = JudgeDeps(spec=SPEC)
    task = math_task("complete")
    right = candidate(task, "Six sevens.\n#### 42", "qwen-coder", expected=2)
    wrong = candidate(task, "#### 41", "smollm2", expected=2)

    assert await on_candidate_generated(batch(right), deps) == [], "one of two expected: the task waits"
    assert task.task_id in {t.task.task_id for t in deps.aggregator.open.values()}
    outs = await on_candidate_generated(batch(wrong, first_offset=1), deps)

    (out,) = outs  # the right answer is accepted: no regeneration
    verdict = out.event
    assert out.topic == deps.topics.verdicts and isinstance(verdict, CandidatesJudged)
    assert verdict.task == task and verdict.judge_version == deps.version and verdict.missing_candidates == 0
    pools = {jc.teacher_id: jc.pool for jc in verdict.candidates}
    assert pools == {"qwen-coder": "train", "smollm2": "contrastive"}
    assert not deps.aggregator.open and deps.aggregator.commit_limit(next(iter(deps.aggregator.next_offsets))) == 0, \
        "until the verdict is published, the task holds its partition's commits"
    deps.aggregator.confirm()  # the bus publishes, then confirms
    assert deps.aggregator.commit_limit(next(iter(deps.aggregator.next_offsets))) is None


async def test_nothing_accepted_asks_for_a_second_attempt_unless_replaying() -> None:
    task = math_task("all wrong")
    wrong = candidate(task, "#### 41", "qwen-coder")

    outs = await on_candidate_generated(batch(wrong), JudgeDeps(spec=retrying_spec()))
    (verdict,) = events_of(outs, CandidatesJudged)
    (retry,) = events_of(outs, RegenerationRequested)
    assert [o.topic for o in outs] == [JudgeDeps(spec=SPEC).topics.verdicts, JudgeDeps(spec=SPEC).topics.regeneration]
    assert verdict.candidates[0].pool == "contrastive"
    assert (retry.task, retry.attempt) == (task, 2)

    replaying = JudgeDeps(spec=retrying_spec(), settings=JudgeSettings(replay=True))
    assert events_of(await on_candidate_generated(batch(wrong), replaying), RegenerationRequested) == []
    single = JudgeDeps(spec=SPEC)  # max_attempts 1: no retry
    assert events_of(await on_candidate_generated(batch(wrong), single), RegenerationRequested) == []


async def test_a_candidate_of_an_unknown_unit_is_dead_lettered_and_the_rest_of_the_batch_is_judged() -> None:
    deps = JudgeDeps(spec=SPEC)
    stranger = candidate(math_task("x").model_copy(update={"task_id": "t-unknown", "unit": "astrology"}), "#### 1")
    known = candidate(math_task("known"), "Six sevens.\n#### 42", "qwen-coder")
    items = batch(stranger, known)

    outs = await on_candidate_generated(items, deps)
    dead = [o for o in outs if isinstance(o, DeadLetter)]
    assert dead == [DeadLetter(items[0].record, "unknown_unit", "unknown unit 'astrology': not in the judge's spec")]
    assert [o.event.task.task_id for o in outs if not isinstance(o, DeadLetter)] == [known.task.task_id]


async def test_an_intermediate_chain_step_is_skipped_and_the_final_one_is_judged() -> None:
    deps = JudgeDeps(spec=SPEC)
    task = math_task("chain")
    chain = Chain(roles=["reasoning", "rewriting"], teachers=["qwen-coder", "smollm2"], step=0)
    step = candidate(task, "Six sevens make 42.", "qwen-coder", chain=chain)

    assert await on_candidate_generated(batch(step), deps) == []
    assert not deps.aggregator.open and not deps.aggregator.in_flight, "the step did not open the task"

    final = candidate(task, "#### 42", "smollm2", chain=chain.model_copy(update={"step": 1}))
    (out,) = await on_candidate_generated(batch(final, first_offset=1), deps)
    assert [jc.teacher_id for jc in out.event.candidates] == ["smollm2"]


async def test_a_task_past_the_timeout_is_flushed_with_what_arrived() -> None:
    deps = JudgeDeps(spec=SPEC)
    task = math_task("slow teacher")
    assert await on_candidate_generated(batch(candidate(task, "#### 42", "qwen-coder", expected=2)), deps) == []

    assert await flush_expired_once(deps) == [], "not yet timed out"
    later = time.monotonic() + SPEC.judge.aggregation_timeout_s + 1
    (out,) = await flush_expired_once(deps, now=later)
    assert out.topic == deps.topics.verdicts
    assert out.event.task == task and out.event.missing_candidates == 1 and len(out.event.candidates) == 1
    assert not deps.aggregator.open and deps.aggregator.in_flight, "in flight until the flusher has published it"
    assert await flush_expired_once(deps, now=later) == [], "flushed once"


async def test_rebuild_marks_tasks_this_version_judged_so_they_are_not_judged_twice() -> None:
    first = JudgeDeps(spec=SPEC)
    task, other = math_task("judged before the crash"), math_task("judged by another version")
    answers = {t.task_id: candidate(t, "#### 42", "qwen-coder") for t in (task, other)}
    outs = await on_candidate_generated(batch(*answers.values()), first)
    verdicts = {o.event.task.task_id: o.event for o in outs}

    restarted = JudgeDeps(spec=SPEC)
    mark_judged(verdicts[task.task_id], restarted)
    mark_judged(verdicts[other.task_id].model_copy(update={"judge_version": "rules-v0-0000000000"}), restarted)

    again = await on_candidate_generated(batch(*answers.values()), restarted)  # the same candidates, redelivered
    assert [o.event.task.task_id for o in again] == [other.task_id]


def test_the_self_check_gate_is_rebuilt_from_the_verdicts_so_a_restart_does_not_reopen_it() -> None:
    data = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text()))
    data["units"]["math_steps"]["judge"]["self_checks"] = {"perturbation_rate": 1.0, "min_agreement": 0.9,
                                                          "window": 10, "min_observations": 3}
    spec = parse_spec(data)
    before_crash = JudgeDeps(spec=spec)
    for _ in range(4):  # the planted errors slipped through: the gate closed
        before_crash.monitor.record("math_steps", "perturbation", False)
    assert before_crash.monitor.gate_closed("math_steps")
    task = math_task("judged while the gate was closed")
    verdicts = [CandidatesJudged(verdict_id=f"v{i}", task=task, judge_version=before_crash.version, candidates=[],
                                 self_checks={"perturbation_caught": False}, produced_by="judge@test")
                for i in range(4)]
    restarted = JudgeDeps(spec=spec)
    assert not restarted.monitor.gate_closed("math_steps")
    for verdict in verdicts:
        mark_judged(verdict, restarted)
    assert restarted.monitor.gate_closed("math_steps") and restarted.monitor.rate("math_steps", "perturbation") == 0.0
    other_version = JudgeDeps(spec=spec)
    for verdict in verdicts:  # another judge version's outcomes are not this judge's
        mark_judged(verdict.model_copy(update={"judge_version": "rules-v0-0000000000"}), other_version)
    assert not other_version.monitor.gate_closed("math_steps")


def verdict_record(verdict: CandidatesJudged, offset: int, partition: int = 0) -> ConsumerRecord:
    value = verdict.model_dump_json().encode()
    return ConsumerRecord(topic="distill.verdicts.v1", partition=partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=verdict.key.encode(), value=value, checksum=None,
                          serialized_key_size=len(verdict.key), serialized_value_size=len(value), headers=())


async def test_replicas_share_judged_tasks_and_gates_through_the_verdicts_they_follow() -> None:
    data = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text()))
    data["units"]["math_steps"]["judge"]["self_checks"] = {"perturbation_rate": 1.0, "min_agreement": 0.9,
                                                          "window": 10, "min_observations": 3}
    spec = parse_spec(data)
    here, peer = JudgeDeps(spec=spec), JudgeDeps(spec=spec)
    # this replica holds a task open; the peer (which had its partition before a rebalance) judged it
    task = math_task("judged by the peer")
    await on_candidate_generated(batch(candidate(task, "#### 42", "qwen-coder", expected=2)), here)
    assert here.aggregator.open
    slipped = [CandidatesJudged(verdict_id=f"peer{i}", task=task if i == 0 else math_task(f"t{i}"), candidates=[],
                                judge_version=here.version, self_checks={"perturbation_caught": False},
                                produced_by="judge@test") for i in range(3)]
    own = CandidatesJudged(verdict_id="own", task=math_task("mine"), judge_version=here.version, candidates=[],
                           self_checks={"perturbation_caught": False}, produced_by="judge@test")
    here.monitor.record("math_steps", "perturbation", False)  # recorded when this replica judged `own`
    here.recorded_here.add(own.verdict_id)
    here.rebuilt_to = {0: 1}  # offset 0 was read by the start-up rebuild: the follower passes over it
    skip = after_rebuild(here)["skip"]
    assert skip(verdict_record(slipped[0], 0)) and not skip(verdict_record(slipped[0], 1))
    assert not skip(verdict_record(slipped[0], 0, partition=1))
    items = [In(own, verdict_record(own, 1)), *[In(v, verdict_record(v, 2 + i)) for i, v in enumerate(slipped)]]
    assert await on_peer_verdicts(items, here) == []
    assert not here.aggregator.open  # judged elsewhere: no second verdict when it times out
    assert await flush_expired_once(here, now=time.monotonic() + 3600) == []
    # 1 own + 3 peer outcomes, each counted once: the gate closes as one judge's would
    assert len(here.monitor.outcomes[("math_steps", "perturbation")]) == 4
    assert here.monitor.gate_closed("math_steps") and not here.recorded_here
    other = CandidatesJudged(verdict_id="v0", task=math_task("x"), judge_version="rules-v0-0000000000", candidates=[],
                             self_checks={"perturbation_caught": False}, produced_by="judge@test")
    await on_peer_verdicts([In(other, verdict_record(other, 9))], peer)  # another judge version's: not ours
    assert not peer.monitor.outcomes
