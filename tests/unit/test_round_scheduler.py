"""Automatic rounds as plain functions (distillery_trainer.rounds) and the spec's round policies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from distillery.contracts.events import EventDeadLettered, SampleCurated, SampleRetracted, StudentTrained, Trace
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import RoundPolicy, parse_spec
from distillery_trainer import rounds
from tests.support import CUSTOM_UNIT

SAMPLES = "t.samples.v1"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def request(student: str, number: int, at: datetime = T0):
    return rounds.round_request(student, number, "test", "trainer@test").model_copy(update={"produced_at": at})


def trained(student: str, number: int, ends: dict[int, int], at: datetime = T0) -> StudentTrained:
    return StudentTrained(student_id=f"student_{student}{number}", student=student, version="v", artifact_dir="a",
                          base_model="tiny-llama", recipe={}, manifest={"topic": SAMPLES, "end_offsets": ends},
                          produced_by="trainer@test", produced_at=at,
                          trace=Trace(causation_id=rounds.round_request_id(student, number)))


def sample(i: int, unit: str = "u") -> SampleCurated:
    from tests.unit.test_contracts import golden  # a valid sample to vary

    return SampleCurated.model_validate({**golden("SampleCurated"), "sample_id": f"sample_{i:04d}", "unit": unit})


def test_round_ids_are_derived_from_student_and_number() -> None:
    assert rounds.round_request_id("tiny", 2) == rounds.round_request_id("tiny", 2)
    assert len({rounds.round_request_id(s, n) for s in ("tiny", "big") for n in (1, 2)}) == 4


def test_no_round_yet() -> None:
    state = rounds.round_state("tiny", [], [], set(), SAMPLES)
    assert state == rounds.RoundState(0, False, {}, None)


def test_a_requested_round_without_a_student_is_in_progress_and_blocks_the_next() -> None:
    state = rounds.round_state("tiny", [request("tiny", 1)], [], set(), SAMPLES)
    assert state.last == 1 and state.in_progress
    assert rounds.due(RoundPolicy(every_samples=1), state, fresh=100, now=T0) is None


def test_a_trained_round_sets_where_new_samples_start() -> None:
    later = T0 + timedelta(minutes=5)
    state = rounds.round_state("tiny", [request("tiny", 1), request("other", 1)],
                               [trained("tiny", 1, {"0": 7, "1": 3}, later)], set(), SAMPLES)
    assert state == rounds.RoundState(1, False, {0: 7, 1: 3}, later)


def test_a_refused_round_is_finished_and_new_samples_still_count_from_the_last_trained_one() -> None:
    reqs = [request("tiny", 1), request("tiny", 2, T0 + timedelta(hours=1))]
    state = rounds.round_state("tiny", reqs, [trained("tiny", 1, {"0": 4})], {rounds.round_request_id("tiny", 2)},
                               SAMPLES)
    assert state.last == 2 and not state.in_progress and state.since == {0: 4}
    assert state.since_at == T0 + timedelta(hours=1)


def test_manual_requests_are_not_rounds() -> None:
    manual = request("tiny", 1).model_copy(update={"request_id": "train_manual", "reason": "command"})
    assert rounds.round_state("tiny", [manual], [], set(), SAMPLES).last == 0


def test_new_samples_count_live_samples_of_the_units_after_the_snapshot() -> None:
    records = [(0, 0, sample(0)), (0, 1, sample(1)), (1, 0, sample(2)), (1, 1, sample(3, unit="other")),
               (0, 2, sample(4))]
    retract = SampleRetracted(retraction_id="retraction_1", sample_id="sample_0004", judge_version="v2", reason="test",
                              produced_by="editor@test")
    assert rounds.new_samples(records, ["u"], {}) == 4
    assert rounds.new_samples(records, ["u"], {0: 1}) == 3  # partition 0 from offset 1 on
    assert rounds.new_samples([*records, (0, 3, retract)], ["u"], {0: 1}) == 2  # a retracted one is not live


@pytest.mark.parametrize(("policy", "fresh", "expected"), [
    (RoundPolicy(every_samples=10), 9, None),
    (RoundPolicy(every_samples=10), 10, "10 new samples >= every_samples 10"),
    (RoundPolicy(manual=True), 1000, None),
    (RoundPolicy(every="1h"), 0, None),  # a schedule never trains on nothing new
    (RoundPolicy(every="1h"), 1, "every 1h (1 new samples)"),  # the first round starts at once
])
def test_due(policy, fresh, expected) -> None:
    assert rounds.due(policy, rounds.RoundState(0, False, {}, None), fresh, T0) == expected


def test_a_schedule_waits_its_duration_after_the_last_round() -> None:
    state = rounds.RoundState(1, False, {}, T0)
    policy = RoundPolicy(every="30m")
    assert rounds.due(policy, state, 5, T0 + timedelta(minutes=29)) is None
    assert rounds.due(policy, state, 5, T0 + timedelta(minutes=30)) == "every 30m (5 new samples)"


def spec_with(rounds_value) -> dict:
    data = yaml.safe_load((CUSTOM_UNIT / "spec.yaml").read_text())
    data["rounds"] = rounds_value
    return data


@pytest.mark.parametrize(("value", "message"), [
    ({"nobody": {"every_samples": 5}}, "field 'rounds': unknown student(s) ['nobody']"),
    ({"tiny": {"every_samples": 0}}, "field 'rounds.tiny.every_samples': Input should be greater than 0"),
    ({"tiny": {"every_samples": -3}}, "field 'rounds.tiny.every_samples': Input should be greater than 0"),
    ({"tiny": {"every": "six hours"}}, "field 'rounds.tiny.every': 'six hours' is not a duration like 90s, 30m, 6h or 1d"),
    ({"tiny": {"every": "0m"}}, "field 'rounds.tiny.every': '0m' is not a duration"),
    ({"tiny": {}}, "field 'rounds.tiny': give one of every_samples, every, or manual"),
    ({"tiny": {"every_samples": 5, "every": "1h"}}, "field 'rounds.tiny': give one of every_samples, every, or manual"),
])
def test_bad_round_policies_are_spec_errors_naming_the_field(value, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec_with(value), "spec.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_round_policies_parse() -> None:
    spec = parse_spec(spec_with({"tiny": {"every_samples": 20}, "smollm2": "manual"}))
    assert spec.rounds["tiny"].every_samples == 20 and spec.rounds["smollm2"].manual
    assert RoundPolicy(every="2h").every_seconds == 7200


def test_refusals_are_read_from_the_trainers_dead_letters() -> None:
    # the scheduler treats a dead-lettered round request as finished (handlers.rounds_due reads them)
    d = EventDeadLettered(dead_letter_id="d1", service="trainer", source_topic="t.training.requests.v1", partition=0,
                          offset=0, record_key=rounds.round_request_id("tiny", 1), payload="{}", error="untrainable",
                          produced_by="trainer@test")
    state = rounds.round_state("tiny", [request("tiny", 1)], [], {d.record_key}, SAMPLES)
    assert state.last == 1 and not state.in_progress
