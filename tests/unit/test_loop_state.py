"""The closed loop's state read back from events (distillery.domain.loop): which units a stop signal
holds out of a student's rounds, which promotions are in force, and how the CLI shows and lifts them
(distillery_cli.loop). Plain events in, no broker."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from distillery.contracts.events import (
    EvaluationCompleted,
    LoopDecided,
    Provenance,
    SampleCurated,
    Variant,
    loop_decision_id,
)
from distillery.contracts.settings import ConfigError
from distillery.domain.loop import RECOMMENDATION, Stop, demoted, serving, stopped_units
from distillery_cli.loop import LoopState, loop_tables, resume_decisions

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
GAIN = {"marginal_gain": "gain_0.001_per_1k_below_0.02"}
SHIFT = {"error_shift": "knowledge_share_0.8_at_or_above_0.5"}


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def evaluation(eid: str, unit_signals: dict[str, dict[str, str]], minutes: int = 0, student: str = "tiny",
               variant: Variant | None = None) -> EvaluationCompleted:
    return EvaluationCompleted(evaluation_id=eid, student_id=f"student_{eid}", scores=[], roi={},
                               report_path="report.md", student=student, variant=variant, unit_signals=unit_signals,
                               produced_by="evaluator@test", produced_at=at(minutes))


def decision(action: str, unit: str, minutes: int = 0, student_id: str = "", student: str = "tiny",
             cause: str = "c") -> LoopDecided:
    return LoopDecided(decision_id=loop_decision_id(action, student, unit, cause), action=action, student=student,
                       unit=unit, student_id=student_id, artifact_dir=f"artifacts/{student_id}" if student_id else "",
                       reason=f"{action} for test", produced_by="evaluator@test", produced_at=at(minutes))


def sample(i: int, unit: str, minutes: int, origin: str = "real") -> SampleCurated:
    return SampleCurated(
        sample_id=f"s{i}", unit=unit, pathway="answer", pool="train", prompt=f"q{i}", final=f"#### {i}",
        content_hash=f"h{i}", origin=origin, produced_by="editor@test", produced_at=at(minutes),
        provenance=Provenance(task_id=f"t{i}", candidate_id=f"c{i}", teacher_id="human", judge_version="real",
                              verdict_id=""),
    )


# --- stopped_units ------------------------------------------------------------------------------------


def test_a_unit_whose_signal_fired_is_stopped_with_the_evaluation_that_fired_it() -> None:
    evals = [evaluation("e1", {}), evaluation("e2", {"math_steps": GAIN}, minutes=10)]
    stops = stopped_units("tiny", evals, [], [])
    assert stops == {"math_steps": Stop("math_steps", "e2", "student_e2", GAIN, at(10))}


def test_nothing_fired_nothing_stopped() -> None:
    assert stopped_units("tiny", [], [], []) == {}
    assert stopped_units("tiny", [evaluation("e1", {}), evaluation("e2", {"math_steps": {}})], [], []) == {}


def test_the_stop_holds_after_a_later_evaluation_that_no_longer_fires() -> None:
    # a unit left out of a round is not trained on, so its signal may go quiet: the stop holds until lifted
    evals = [evaluation("e1", {"math_steps": GAIN}), evaluation("e2", {}, minutes=10)]
    assert stopped_units("tiny", evals, [], [])["math_steps"].evaluation_id == "e1"


def test_variant_evaluations_and_other_students_are_ignored() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN}, variant=Variant(name="naive", bucket="multi_teacher")),
             evaluation("e2", {"tool_call": SHIFT}, student="smollm2")]
    assert stopped_units("tiny", evals, [], []) == {}
    assert set(stopped_units("smollm2", evals, [], [])) == {"tool_call"}


def test_a_resume_after_the_stop_lifts_it_and_one_before_does_not() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN, "tool_call": SHIFT}, minutes=10)]
    before = decision("resume", "math_steps", minutes=5)
    assert set(stopped_units("tiny", evals, [before], [])) == {"math_steps", "tool_call"}
    after = decision("resume", "math_steps", minutes=15)
    assert set(stopped_units("tiny", evals, [after], [])) == {"tool_call"}  # only the resumed unit


def test_a_resume_of_another_student_or_a_promotion_does_not_lift_the_stop() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN})]
    others = [decision("resume", "math_steps", minutes=5, student="smollm2"),
              decision("promote", "math_steps", minutes=5, student_id="student_x")]
    assert set(stopped_units("tiny", evals, others, [])) == {"math_steps"}


def test_real_samples_of_the_unit_produced_after_the_stop_lift_it() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN}, minutes=10)]
    assert set(stopped_units("tiny", evals, [], [sample(1, "math_steps", minutes=5)])) == {"math_steps"}, \
        "a real sample from before the stop does not lift it"
    assert set(stopped_units("tiny", evals, [], [sample(2, "math_steps", 15, origin="teacher")])) == {"math_steps"}, \
        "a distilled sample is no real data"
    assert set(stopped_units("tiny", evals, [], [sample(3, "tool_call", minutes=15)])) == {"math_steps"}, \
        "real data of another unit lifts nothing"
    assert stopped_units("tiny", evals, [], [sample(4, "math_steps", minutes=15)]) == {}


def test_a_unit_that_fires_again_after_a_resume_is_stopped_again_by_the_new_evaluation() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN}), evaluation("e2", {"math_steps": SHIFT}, minutes=20)]
    resumed = [decision("resume", "math_steps", minutes=10, cause="e1")]
    (stop,) = stopped_units("tiny", evals, resumed, []).values()
    assert (stop.evaluation_id, stop.signals, stop.since) == ("e2", SHIFT, at(20))
    # a second resume, after the new stop, lifts it again
    again = [*resumed, decision("resume", "math_steps", minutes=30, cause="e2")]
    assert stopped_units("tiny", evals, again, []) == {}


def test_firing_again_while_stopped_keeps_the_first_stop() -> None:
    evals = [evaluation("e1", {"math_steps": GAIN}), evaluation("e2", {"math_steps": SHIFT}, minutes=20)]
    assert stopped_units("tiny", evals, [], [])["math_steps"].evaluation_id == "e1"
    # a resume between the two evaluations lifts the first stop only: the second holds
    assert stopped_units("tiny", evals, [decision("resume", "math_steps", 10)], [])["math_steps"].evaluation_id == "e2"


# --- serving and demoted -------------------------------------------------------------------------------


def promote(student_id: str, minutes: int = 0, unit: str = "math_steps") -> LoopDecided:
    return decision("promote", unit, minutes, student_id=student_id, cause=f"eval_{student_id}")


def demote(student_id: str, minutes: int = 0, unit: str = "math_steps") -> LoopDecided:
    return decision("demote", unit, minutes, student_id=student_id, cause=f"promo_{student_id}")


def test_a_promotion_serves_until_the_same_student_is_demoted() -> None:
    a = promote("student_a")
    assert serving([a]) == {("tiny", "math_steps"): a}
    assert serving([a, demote("student_a", 5)]) == {}
    assert demoted([a, demote("student_a", 5)]) == {("student_a", "math_steps")}


def test_demoting_an_older_student_leaves_a_newer_promotion_in_force() -> None:
    b = promote("student_b", 5)
    assert serving([promote("student_a"), b, demote("student_a", 10)]) == {("tiny", "math_steps"): b}


def test_promotions_are_per_student_recipe_and_unit() -> None:
    math, tools = promote("student_a"), promote("student_a", unit="tool_call")
    assert serving([math, tools, demote("student_a", 5, unit="tool_call")]) == {("tiny", "math_steps"): math}


def test_redelivered_decisions_change_nothing() -> None:
    a, d = promote("student_a"), demote("student_a", 5)
    assert serving([a, a]) == {("tiny", "math_steps"): a}
    assert serving([a, d, d]) == {}
    assert serving([a, d, a]) == {}, "a promotion redelivered after its demotion does not put the student back"
    b = promote("student_b", 10)
    assert serving([a, d, b, d]) == {("tiny", "math_steps"): b}
    assert demoted([a, d, d, b]) == {("student_a", "math_steps")}


# --- the CLI: distillery resume, and the loop's tables --------------------------------------------------


def stop(unit: str, eid: str, signals: dict[str, str]) -> Stop:
    return Stop(unit, eid, f"student_{eid}", signals, T0)


STATE = LoopState(
    rounds={"smollm2": 1, "tiny": 3},
    stopped={"tiny": {"math_steps": stop("math_steps", "e1", {**GAIN, **SHIFT})},
             "smollm2": {"math_steps": stop("math_steps", "e2", GAIN), "tool_call": stop("tool_call", "e2", SHIFT)}},
    promoted={}, decisions=[],
)


def test_resume_gives_one_decision_per_student_holding_the_unit_out() -> None:
    decisions = resume_decisions("math_steps", None, STATE)
    assert [(d.action, d.student, d.unit, d.student_id) for d in decisions] == [
        ("resume", "smollm2", "math_steps", ""), ("resume", "tiny", "math_steps", "")]
    # its id derives from the stop it lifts, so resuming twice before the topic shows it repeats the id
    assert decisions[1].decision_id == loop_decision_id("resume", "tiny", "math_steps", "e1")
    assert [d.decision_id for d in decisions] == [d.decision_id for d in resume_decisions("math_steps", None, STATE)]
    assert "marginal_gain" in decisions[1].reason and "error_shift" in decisions[1].reason


def test_resume_can_be_limited_to_one_student() -> None:
    (only,) = resume_decisions("math_steps", "tiny", STATE)
    assert only.student == "tiny"
    (tools,) = resume_decisions("tool_call", None, STATE)
    assert tools.student == "smollm2"


def test_resuming_a_unit_nothing_holds_out_is_an_error_naming_what_is_held_out() -> None:
    with pytest.raises(ConfigError) as info:
        resume_decisions("tool_boundary", None, STATE)
    message = str(info.value)
    assert "unit 'tool_boundary' is not held out" in message
    assert "math_steps (smollm2)" in message and "math_steps (tiny)" in message and "tool_call (smollm2)" in message
    with pytest.raises(ConfigError) as info:
        resume_decisions("tool_call", "tiny", STATE)  # held out, but by another student
    assert "'tiny'" in str(info.value) and "tool_call (smollm2)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resume_decisions("math_steps", None, LoopState({"tiny": 0}, {}, {}, []))
    assert "held out: none" in str(info.value)


def rendered(state: LoopState) -> list[str]:
    texts = []
    for table in loop_tables(state):
        console = Console(record=True, width=200, file=io.StringIO())
        console.print(table)
        texts.append(console.export_text())
    return texts


def test_the_loop_table_names_stopped_units_with_their_signals_and_no_history_without_decisions() -> None:
    (table,) = rendered(STATE)
    assert "closed loop" in table
    tiny = next(line for line in table.splitlines() if "tiny" in line)
    assert "3" in tiny and "math_steps: marginal_gain, error_shift" in tiny
    smollm2 = next(line for line in table.splitlines() if "smollm2" in line)
    assert "math_steps: marginal_gain; tool_call: error_shift" in smollm2
    # the caption says what to do instead (it wraps: compare without the line breaks)
    assert f"A unit left out: {RECOMMENDATION}." in " ".join(table.split())


def test_the_loop_tables_show_promotions_in_force_and_the_decision_history() -> None:
    a = promote("student_0123456789abcdef")
    d = demote("student_fedcba9876543210", 5, unit="tool_call")
    state = LoopState(rounds={"tiny": 0}, stopped={}, promoted={("tiny", "math_steps"): a}, decisions=[a, d])
    current, history = rendered(state)
    tiny = next(line for line in current.splitlines() if "tiny" in line)
    assert "math_steps (student_01234567)" in tiny
    assert "A unit left out" not in current  # no caption while nothing is stopped
    assert "promotions topic" in history
    lines = [line for line in history.splitlines() if "for test" in line]
    assert len(lines) == 2
    assert "2026-11-30 12:00:00" in lines[0] and "promote" in lines[0] and "student_01234567" in lines[0]
    assert "demote" in lines[1] and "tool_call" in lines[1] and "student_fedcba98" in lines[1]


def test_a_student_with_nothing_stopped_or_promoted_shows_dashes() -> None:
    (table,) = rendered(LoopState({"tiny": 0}, {}, {}, []))
    tiny = next(line for line in table.splitlines() if "tiny" in line)
    assert tiny.count("-") >= 2 and "0" in tiny
