"""End to end: a judge replay under stricter rules, and a human review decision, on the real broker.

The whole pipeline runs as OS processes with replay teachers (tests/support.py). The replay
test tightens one unit's rules, re-judges every candidate through the same function
``distillery replay`` uses, and follows the consequences: new verdicts, the diff, the
editor's retractions and a student trained without the retracted samples. The review test
publishes decisions through the functions ``distillery review decide`` uses and checks the
editor honours them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from distillery.contracts.events import (
    CandidatesJudged,
    ReviewDecided,
    SampleCurated,
    SampleRetracted,
    StudentTrained,
    TrainingRequested,
    live_samples,
    parse_event,
    parse_sample_record,
)
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import consumer_lag, produce_all, read_snapshot
from distillery_cli import replay, review, stack
from tests.support import replay_spec
from tests.waiting import events, wait_for

STRICT_UNIT = "math_steps"
REVIEW_UNIT = "tool_call"


@contextlib.contextmanager
def running_pipeline(tmp_path: Path, bootstrap: str, prefix: str, edit: Callable[[dict], None] | None = None):
    """The six services on a replay spec (optionally edited), the workload submitted and settled."""
    spec_path, workload = replay_spec(tmp_path)
    if edit:
        data = yaml.safe_load(spec_path.read_text())
        edit(data)
        spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    state = stack.start(spec_path, tmp_path / "run", prefix, bootstrap=bootstrap)
    try:
        stack.wait_ready(state, timeout_s=120)
        yield state, spec_path, workload
    finally:
        stack.stop(state)


def submit(settings: ServiceSettings, spec_path: Path, workload: list[dict]) -> None:
    text = "".join(json.dumps(t) + "\n" for t in workload)
    submitted, errors = parse_tasks(text, load_spec(spec_path), settings.max_task_bytes, "test")
    assert errors == []
    asyncio.run(produce_all(settings, [(settings.topics.tasks, e.task_id, e.model_dump_json().encode())
                                       for e in submitted]))


def editor_lag(settings: ServiceSettings) -> int:
    topic = settings.topics.verdicts
    return asyncio.run(consumer_lag(settings, settings.group("editor"), [topic]))[topic]


def settle(settings: ServiceSettings, workload: list[dict]) -> list[CandidatesJudged]:
    """Wait for a verdict of every task and for the editor to have processed them all."""
    verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                        lambda v: len({x.task.task_id for x in v}) == len(workload), timeout_s=120)
    wait_for(lambda: editor_lag(settings), lambda lag: lag == 0, timeout_s=60)
    return verdicts


def sample_history(settings: ServiceSettings) -> list[SampleCurated | SampleRetracted]:
    snapshot = asyncio.run(read_snapshot(settings, settings.topics.samples))
    return [parse_sample_record(r.value) for r in snapshot.records]


def curated(history) -> list[SampleCurated]:
    return [e for e in history if isinstance(e, SampleCurated)]


def retracted(history) -> list[SampleRetracted]:
    return [e for e in history if isinstance(e, SampleRetracted)]


def final_answer(text: str) -> str:
    return text.rsplit("####", 1)[1].strip()


def stricter_rule(v1: list[CandidatesJudged]) -> str:
    """A forbidden pattern that matches the final answers of two of the unit's tasks, judged `train` by v1."""
    train = sorted((v.task.task_id, final_answer(jc.text)) for v in v1 if v.task.unit == STRICT_UNIT
                   for jc in v.candidates if jc.pool == "train")
    answers = list(dict.fromkeys(answer for _, answer in train))[:2]
    assert answers, f"no {STRICT_UNIT} candidate in train under v1"
    return r"####\s*(?:" + "|".join(re.escape(a) for a in answers) + r")\s*$"


def write_strict_spec(spec_path: Path, pattern: str) -> Path:
    data = yaml.safe_load(spec_path.read_text())
    data["units"][STRICT_UNIT].setdefault("rules", {}).setdefault("forbidden_patterns", []).append(pattern)
    strict = spec_path.with_name("spec-strict.yaml")
    strict.write_text(yaml.safe_dump(data, sort_keys=False))
    return strict


def train_student(settings: ServiceSettings) -> StudentTrained:
    request = TrainingRequested(request_id="train-after-replay", student="tiny", produced_by="test")
    asyncio.run(produce_all(settings, [(settings.topics.training_requests, request.request_id,
                                        request.model_dump_json().encode())]))
    return wait_for(lambda: events(settings, settings.topics.students, StudentTrained), lambda s: len(s) == 1,
                    timeout_s=300)[0]


def test_a_replay_under_stricter_rules_retracts_what_it_rejects(tmp_path, kafka_bootstrap, topic_prefix, settings):
    with running_pipeline(tmp_path, kafka_bootstrap, topic_prefix) as (state, spec_path, workload):
        submit(settings, spec_path, workload)
        v1 = settle(settings, workload)
        (old_version,) = {v.judge_version for v in v1}
        before = sample_history(settings)
        assert curated(before) and not retracted(before)

        pattern = stricter_rule(v1)
        doomed = {jc.candidate_id for v in v1 if v.task.unit == STRICT_UNIT for jc in v.candidates
                  if jc.pool == "train" and re.search(pattern, jc.text, re.IGNORECASE)}
        unit_train = [jc for v in v1 if v.task.unit == STRICT_UNIT for jc in v.candidates if jc.pool == "train"]
        assert 0 < len(doomed) < len(unit_train), "the stricter rule must catch some, not all, of the unit's train"

        started = time.monotonic()
        plan = replay.run_replay(state, "strict", write_strict_spec(spec_path, pattern), timeout_s=240)
        replay_s = time.monotonic() - started
        assert plan.old_version == old_version and plan.new_version.startswith("strict-")
        assert not any(p.name == plan.process_name for p in state.processes), "stopped and dropped from the state"

        # every task judged again, under the new version; the old verdicts stay
        verdicts = events(settings, settings.topics.verdicts, CandidatesJudged)
        tasks = {v.task.task_id for v in v1}
        assert {v.task.task_id for v in verdicts if v.judge_version == plan.new_version} == tasks
        assert sum(v.judge_version == old_version for v in verdicts) == len(v1)

        # the diff: exactly the doomed candidates left train, for the new rule
        diff = replay.diff_verdicts(verdicts, plan.old_version, plan.new_version)
        left_train = [m for m in diff.moves if m.old_pool == "train" and m.new_pool != "train"]
        assert {m.candidate_id for m in left_train} == doomed and len(left_train) == len(doomed)
        assert all(f"rule:forbidden:{pattern}" in m.reasons and m.unit == STRICT_UNIT for m in left_train)
        by_label = replay.load_diff(settings, "rules-v1", "strict")
        assert by_label == diff
        (unit_diff,) = [u for u in diff.units if u.unit == STRICT_UNIT]
        assert unit_diff.judged_both == sum(len(v.candidates) for v in v1 if v.task.unit == STRICT_UNIT)

        # the editor retracted exactly the samples of the doomed candidates
        expected = {s.sample_id for s in curated(before) if s.provenance.candidate_id in doomed}
        assert expected, "at least one doomed candidate had a sample"
        history = wait_for(lambda: sample_history(settings),
                           lambda h: {r.sample_id for r in retracted(h)} >= expected, timeout_s=60)
        retractions = retracted(history)
        assert {r.sample_id for r in retractions} == expected
        assert all(r.judge_version == plan.new_version and r.candidate_id in doomed for r in retractions)
        assert not expected & {s.sample_id for s in live_samples(history)}

        # a student trained now never sees them
        trained = train_student(settings)
        assert trained.manifest["sample_ids"] and not expected & set(trained.manifest["sample_ids"])
        assert trained.manifest["retracted"] == len(expected)
        print(f"replay of {len(tasks)} tasks took {replay_s:.1f}s; {len(doomed)} candidates left train, "
              f"{len(expected)} samples retracted")
        replay.print_diff(diff)


def review_everything_in_one_unit(data: dict) -> None:
    data["units"][REVIEW_UNIT].update(risk="high", second_check="review")


def test_review_decisions_are_honoured_by_the_editor(tmp_path, kafka_bootstrap, topic_prefix, settings):
    with running_pipeline(tmp_path, kafka_bootstrap, topic_prefix, review_everything_in_one_unit) as (
            _state, spec_path, workload):
        submit(settings, spec_path, workload)
        v1 = settle(settings, workload)
        before = sample_history(settings)

        queue = review.load_queue(settings)
        assert queue and {i.unit for i in queue} == {REVIEW_UNIT} and {i.candidate.pool for i in queue} == {"review"}
        assert [i.uncertainty_rank for i in queue] == sorted(i.uncertainty_rank for i in queue)
        assert not {s.provenance.candidate_id for s in curated(before)} & {i.candidate_id for i in queue}

        # accept the most uncertain candidate, named by its short id as the table shows it
        chosen = queue[0]
        accepted, warned = review.decide(settings, review.short_id(chosen.candidate_id), "accept", "train",
                                         note="checked by hand", reviewer="tester")
        assert warned == []
        reviews = asyncio.run(read_snapshot(settings, settings.topics.reviews)).records
        assert [(r.key.decode(), parse_event(ReviewDecided, r.value)) for r in reviews] == [
            (chosen.verdict.task.unit, accepted)]  # keyed by unit, like the verdicts
        assert chosen.candidate_id not in {i.candidate_id for i in review.load_queue(settings)}
        human = wait_for(lambda: [s for s in curated(sample_history(settings))
                                  if s.provenance.candidate_id == chosen.candidate_id],
                         lambda s: len(s) > 0, timeout_s=60)
        assert all(s.metadata.get("decided_by") == "human" and s.pool == "train" for s in human)

        # reject a candidate the judge had put in train (allowed, with a warning): its samples go
        with_samples = {s.provenance.candidate_id for s in curated(before) if s.unit != REVIEW_UNIT}
        victim = next(jc.candidate_id for v in v1 for jc in v.candidates if jc.candidate_id in with_samples)
        _, warned = review.decide(settings, victim, "reject", None, note="wrong after all", reviewer="tester")
        assert any("not 'review'" in w for w in warned)
        doomed = {s.sample_id for s in curated(before) if s.provenance.candidate_id == victim}
        history = wait_for(lambda: sample_history(settings),
                           lambda h: {r.sample_id for r in retracted(h)} >= doomed, timeout_s=60)
        assert {r.sample_id for r in retracted(history)} == doomed
        assert all(r.judge_version == "human" for r in retracted(history))
