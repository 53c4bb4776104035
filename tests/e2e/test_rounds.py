"""Automatic rounds on the real broker: the trainer starts a student's rounds from sample counts,
never two at once, a SIGKILL mid-round neither loses nor doubles the round, and a stop signal
holds the unit out of the rounds until ``distillery resume``.

The custom-unit example's tickets arrive in three batches. The spec gives the tiny student the
policy ``every_samples: N``; the trainer's scheduler looks every second. Each batch yields more
than N samples, so at least two rounds run; the trainer is killed while round 2 trains, and
restarted. The planted stop signal: ``stop_signals`` asks for a marginal gain of 1,000 accuracy
points per 1,000 samples over two rounds, which no student reaches, so it fires on the second
round's evaluation. Batch 3's samples then start no round until the operator resumes the unit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distillery.contracts.events import (
    EvaluationCompleted,
    LoopDecided,
    SampleCurated,
    StudentTrained,
    TrainingRequested,
    live_samples,
    parse_sample_record,
)
from distillery_cli import stack
from distillery_trainer import rounds
from tests.support import cli, custom_unit_generator, custom_unit_spec, editor_lag, restart
from tests.waiting import events, wait_for

EVERY = 12
STUDENT = "tiny"
UNIT = "ticket_triage"
# fires on the second evaluated round, never on the first (marginal gain needs two rounds; error
# shift would need every error to be missing knowledge, which a ticket's errors never are)
PLANTED_STOP = {"rounds": 2, "min_gain_per_1k": 1000, "error_shift_share": 1.0}


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, topic_prefix):
    data_dir = tmp_path / "data"
    custom_unit_generator().generate(data_dir, 52, 0.25, 0)  # 13 held out, 39 to train in three batches
    spec_path = custom_unit_spec(tmp_path, data_dir, rounds={STUDENT: {"every_samples": EVERY}},
                                 extra={"stop_signals": PLANTED_STOP}, tiny={"max_steps": 80})
    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap,
                        extra_env={"DISTILLERY_ROUND_CHECK_S": "1"})
    try:
        stack.wait_ready(state, timeout_s=120)
        yield state, data_dir
    finally:
        stack.stop(state)


def round_requests(settings) -> list[TrainingRequested]:
    return [r for r in events(settings, settings.topics.training_requests, TrainingRequested)
            if r.reason.startswith(rounds.ROUND_REASON)]


def trained_for(settings, number: int) -> list[StudentTrained]:
    rid = rounds.round_request_id(STUDENT, number)
    return [t for t in events(settings, settings.topics.students, StudentTrained) if t.trace.causation_id == rid]


def submit(run_dir: str, tasks: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    cli("submit", str(path), "--run-dir", run_dir)


def test_rounds_start_on_sample_counts_never_overlap_and_survive_a_kill(pipeline, settings, tmp_path):
    state, data_dir = pipeline
    tasks = [json.loads(line) for line in (data_dir / "tickets.jsonl").read_text().splitlines()]
    train = [t for t in tasks if t["split"] == "train"]
    held_out = [t for t in tasks if t["split"] == "eval"]
    third = len(train) // 3
    train, later = train[: 2 * third], train[2 * third:]

    # batch 1: half the training tickets (and the held-out ones): round 1 starts by itself
    submit(state.run_dir, held_out + train[: len(train) // 2], tmp_path / "batch1.jsonl")
    wait_for(lambda: trained_for(settings, 1), bool, timeout_s=180)
    assert [r.request_id for r in round_requests(settings)][:1] == [rounds.round_request_id(STUDENT, 1)]

    # batch 2: round 2 starts; the trainer is killed while it trains and comes back
    submit(state.run_dir, train[len(train) // 2:], tmp_path / "batch2.jsonl")
    wait_for(lambda: round_requests(settings), lambda r: len(r) >= 2, timeout_s=120)
    assert not trained_for(settings, 2), "round 2 finished before the kill; lengthen the run"
    restart(state, "trainer")
    wait_for(lambda: trained_for(settings, 2), bool, timeout_s=240)

    # every sample is in; the scheduler runs for a while more: any further round is a full one
    wait_for(lambda: editor_lag(settings), lambda lag: lag == 0, timeout_s=60)
    time.sleep(5)
    requests = round_requests(settings)
    numbers = len(requests)
    assert numbers >= 2
    # each round requested exactly once, in order, and trained exactly once (the kill doubled nothing)
    assert [r.request_id for r in requests] == [rounds.round_request_id(STUDENT, n) for n in range(1, numbers + 1)]
    wait_for(lambda: trained_for(settings, numbers), bool, timeout_s=240)
    students = [trained_for(settings, n) for n in range(1, numbers + 1)]
    assert [len(s) for s in students] == [1] * numbers
    # never two at once: round n+1 was requested after round n's student was published
    for n in range(1, numbers):
        assert requests[n].produced_at >= students[n - 1][0].produced_at
    # each round had at least N new live samples since the previous round's snapshot
    history = events(settings, settings.topics.samples, parse_sample_record)
    live = {s.sample_id for s in live_samples(history)}
    assert all(s[0].manifest["topic"] == settings.topics.samples for s in students)
    snapshots = [{}] + [s[0].manifest["end_offsets"] for s in students]
    for n in range(1, numbers + 1):
        before = sum(int(o) for o in snapshots[n - 1].values())
        after = sum(int(o) for o in snapshots[n].values())
        assert after - before >= EVERY, f"round {n} started with {after - before} new sample records"
        print(f"round {n}: {requests[n - 1].reason}; snapshot +{after - before} sample records; "
              f"student {students[n - 1][0].student_id}")
    assert all(isinstance(e, SampleCurated) for e in history)  # no retraction here: records are samples
    assert len(live) >= EVERY * numbers
    # the evaluator evaluated every round's student
    evaluated = wait_for(lambda: {e.student_id for e in events(settings, settings.topics.evaluations, EvaluationCompleted)},
                         lambda ids: ids >= {s[0].student_id for s in students}, timeout_s=240)
    assert evaluated
    held_out_by_signal_until_resumed(state, settings, tmp_path, later, numbers)


def held_out_by_signal_until_resumed(state, settings, tmp_path, later: list[dict], numbers: int) -> None:
    """The planted signal fired on the latest round: batch 3 starts no round until ``resume``."""
    evaluations = [e for e in events(settings, settings.topics.evaluations, EvaluationCompleted) if e.variant is None]
    first, latest = evaluations[0], evaluations[-1]
    assert UNIT not in first.unit_signals  # one round is too short a history for any signal here
    assert "marginal_gain" in latest.unit_signals[UNIT], latest.unit_signals
    status = cli("status", "--run-dir", state.run_dir)
    assert "left out of the next round" in status and f"{UNIT}: marginal_gain" in status, status

    submit(state.run_dir, later, tmp_path / "batch3.jsonl")
    wait_for(lambda: editor_lag(settings), lambda lag: lag == 0, timeout_s=60)
    time.sleep(4)  # four scheduler ticks with more than N new samples of the held-out unit
    assert len(round_requests(settings)) == numbers, "a round started while its only unit was held out"

    out = cli("resume", UNIT, "--run-dir", state.run_dir)
    assert f"resumed {UNIT} for {STUDENT}" in out
    decisions = events(settings, settings.topics.promotions, LoopDecided)
    assert [(d.action, d.unit, d.student) for d in decisions] == [("resume", UNIT, STUDENT)]
    requests = wait_for(lambda: round_requests(settings), lambda r: len(r) == numbers + 1, timeout_s=60)
    resumed = requests[-1]
    assert resumed.request_id == rounds.round_request_id(STUDENT, numbers + 1) and not resumed.exclude_units
    assert resumed.produced_at >= decisions[0].produced_at  # (the trainer trains it like any round above)
    print(f"round {numbers + 1} after resume: {resumed.reason}")
