"""``distillery review`` and ``distillery replay``: the plain functions, and the commands' one-line errors.

The commands run in-process through typer's CliRunner; topic reads are replaced by lists of
events, so nothing here needs a broker. One subprocess test checks the user-facing contract
(exit code 2, one stderr line) end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from distillery import __version__
from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    Task,
    Trace,
    decision_id_for,
)
from distillery.contracts.settings import ConfigError
from distillery_cli import main, replay, review
from tests.support import assert_config_error

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"
OLD, NEW = "rules-v1-0123456789", "strict-abcdefabcd"


# --- builders ---------------------------------------------------------------------------------------


def task(task_id: str, unit: str = "tool_call", split: str = "train") -> Task:
    return Task(task_id=task_id, unit=unit, prompt=f"prompt of {task_id}", split=split)


def judged(candidate_id: str, pool: str, score: float = 0.5, reasons: tuple[str, ...] = (),
           text: str = "some answer", teacher: str = "alpha") -> JudgedCandidate:
    return JudgedCandidate(candidate_id=candidate_id, teacher_id=teacher, text=text, pool=pool, rank=1,
                           score=score, reasons=list(reasons))


def verdict(t: Task, version: str, *candidates: JudgedCandidate, attempt: int = 1) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=f"verdict_{t.task_id}_{version}_{attempt}", task=t, judge_version=version,
                            candidates=list(candidates), attempt=attempt, produced_by="judge@test",
                            trace=Trace(task_id=t.task_id))


def item_for(v: CandidatesJudged, index: int = 0) -> review.ReviewItem:
    return review.ReviewItem(v, v.candidates[index])


@pytest.fixture
def verdicts() -> list[CandidatesJudged]:
    """Three tasks; task-2 was re-judged by a newer version that took one candidate out of review."""
    t1, t2, t3 = task("task-1"), task("task-2"), task("task-3", unit="math_steps")
    return [
        verdict(t1, OLD, judged("cand_aaaa1111", "review", 0.9), judged("cand_aaaa2222", "discard", 0.1)),
        verdict(t2, OLD, judged("cand_bbbb1111", "review", 0.5), judged("cand_bbbb2222", "review", 0.7)),
        verdict(t3, OLD, judged("cand_cccc1111", "review", 0.45), judged("cand_cccc2222", "train", 1.0)),
        verdict(t2, NEW, judged("cand_bbbb1111", "discard", 0.2, ("rule:forbidden:x",)),
                judged("cand_bbbb2222", "review", 0.6)),
    ]


def decision_on(item: review.ReviewItem, decision: str = "accept", pool: str | None = "train") -> ReviewDecided:
    return review.build_decision(item, decision, pool, "", "someone")


# --- the review queue ---------------------------------------------------------------------------------


def test_the_latest_verdict_of_a_task_wins(verdicts) -> None:
    latest = review.latest_verdicts(verdicts)
    assert sorted(latest) == ["task-1", "task-2", "task-3"]
    assert latest["task-2"].judge_version == NEW
    assert latest["task-1"].judge_version == OLD


def test_queue_lists_review_candidates_of_latest_verdicts_most_uncertain_first(verdicts) -> None:
    queue = review.review_queue(review.latest_verdicts(verdicts), decided=set())
    # |score - 0.5|: cccc1111 0.05, bbbb2222 0.1, aaaa1111 0.4; bbbb1111 left review under the new version
    assert [i.candidate_id for i in queue] == ["cand_cccc1111", "cand_bbbb2222", "cand_aaaa1111"]
    assert queue[1].verdict.judge_version == NEW


def test_equally_uncertain_candidates_are_ordered_by_id() -> None:
    t = task("task-9")
    latest = review.latest_verdicts([verdict(t, OLD, judged("cand_ffff", "review", 0.4), judged("cand_0000", "review", 0.6))])
    assert [i.candidate_id for i in review.review_queue(latest, set())] == ["cand_0000", "cand_ffff"]


def test_decided_candidates_leave_the_queue_and_unit_filters(verdicts) -> None:
    latest = review.latest_verdicts(verdicts)
    decided = review.latest_decisions([decision_on(item_for(latest["task-3"]))])
    queue = review.review_queue(latest, decided)
    assert "cand_cccc1111" not in [i.candidate_id for i in queue]
    assert [i.candidate_id for i in review.review_queue(latest, set(), unit="math_steps")] == ["cand_cccc1111"]
    assert review.review_queue(latest, set(), unit="tool_boundary") == []


def test_held_out_tasks_are_not_queued() -> None:
    latest = review.latest_verdicts([verdict(task("task-e", split="eval"), OLD, judged("cand_eeee", "review"))])
    assert review.review_queue(latest, set()) == []


def test_a_later_decision_on_the_same_candidate_supersedes_the_earlier(verdicts) -> None:
    item = item_for(review.latest_verdicts(verdicts)["task-1"])
    first, second = decision_on(item, "accept", "train"), decision_on(item, "reject", None)
    assert review.latest_decisions([first, second])["cand_aaaa1111"].decision == "reject"


# --- candidate ids ------------------------------------------------------------------------------------


def test_a_candidate_is_found_by_full_id_by_prefix_and_by_bare_hex(verdicts) -> None:
    items = review.judged_items(review.latest_verdicts(verdicts))
    assert review.resolve_candidate("cand_cccc1111", items).candidate_id == "cand_cccc1111"
    assert review.resolve_candidate("cand_cccc1", items).candidate_id == "cand_cccc1111"
    assert review.resolve_candidate("cccc2", items).candidate_id == "cand_cccc2222"


@pytest.mark.parametrize("prefix, message", [
    ("cand_dddd", "no judged candidate with id 'cand_dddd'"),
    ("cand_bbbb", "ambiguous: cand_bbbb1111, cand_bbbb2222"),
    ("  ", "give a candidate id"),
])
def test_unknown_and_ambiguous_ids_are_config_errors(verdicts, prefix: str, message: str) -> None:
    items = review.judged_items(review.latest_verdicts(verdicts))
    with pytest.raises(ConfigError, match=message):
        review.resolve_candidate(prefix, items)


def test_short_ids_and_excerpts_fit_a_table_row() -> None:
    assert review.short_id("cand_0123456789abcdef01234567") == "cand_01234567"
    assert review.excerpt("line one\n  line   two") == "line one line two"
    long = review.excerpt("x" * 200)
    assert len(long) == review.EXCERPT_CHARS and long.endswith("…")


# --- decisions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool, accept, reject, expected", [
    (None, False, True, ("reject", None)),
    (None, True, False, ("accept", "train")),
    ("hard_case", False, False, ("accept", "hard_case")),
    ("refusal", True, False, ("accept", "refusal")),
])
def test_the_decision_flags(pool, accept, reject, expected) -> None:
    assert review.choose_decision(pool, accept, reject) == expected


@pytest.mark.parametrize("pool, accept, reject, message", [
    ("train", False, True, "choose one"),
    (None, True, True, "choose one"),
    (None, False, False, "say what to do"),
    ("review", False, False, "--pool must be one of"),
    ("gold", False, False, "got 'gold'"),
])
def test_contradictory_or_missing_decision_flags_are_errors(pool, accept, reject, message) -> None:
    with pytest.raises(ConfigError, match=message):
        review.choose_decision(pool, accept, reject)


def test_the_decision_event_carries_the_verdicts_candidate(verdicts) -> None:
    v = review.latest_verdicts(verdicts)["task-2"]
    item = item_for(v, 1)
    event = review.build_decision(item, "accept", "hard_case", "borderline but right", "ana")
    assert event.decision_id == decision_id_for("cand_bbbb2222", "accept", "hard_case", "borderline but right", "ana")
    assert event.event_id == event.decision_id
    assert event.candidate == v.candidates[1] and event.task == v.task
    assert (event.judge_version, event.verdict_id) == (NEW, v.verdict_id)
    assert (event.decision, event.pool, event.note, event.reviewer) == ("accept", "hard_case", "borderline but right", "ana")
    assert event.produced_by == f"cli@{__version__}"
    assert event.key == v.task.unit and event.trace.task_id == "task-2"  # keyed by unit, like verdicts


def test_deciding_outside_the_review_pool_or_twice_warns(verdicts) -> None:
    latest = review.latest_verdicts(verdicts)
    in_review, in_train = item_for(latest["task-3"], 0), item_for(latest["task-3"], 1)
    assert review.decision_warnings(in_review, None) == []
    (warning,) = review.decision_warnings(in_train, None)
    assert "in pool 'train', not 'review'" in warning
    (warning,) = review.decision_warnings(in_review, decision_on(in_review, "reject", None))
    assert "already decided (reject by someone)" in warning


# --- replay diff --------------------------------------------------------------------------------------


def diff_verdicts() -> list[CandidatesJudged]:
    t1, t2, t3 = task("t1", "math_steps"), task("t2", "math_steps"), task("t3", "tool_call")
    forbidden = ("rule:forbidden:#### 7",)
    return [
        verdict(t1, OLD, judged("c1", "train"), judged("c2", "train")),
        verdict(t2, OLD, judged("c3", "train"), judged("c4", "discard")),
        verdict(t3, OLD, judged("c5", "review")),
        verdict(t1, NEW, judged("c1", "discard", reasons=forbidden), judged("c2", "discard", reasons=forbidden)),
        verdict(t2, NEW, judged("c3", "train"), judged("c4", "discard")),
        verdict(t3, NEW, judged("c5", "train", reasons=("rules_passed",))),
        verdict(task("t4"), NEW, judged("c6", "train")),  # judged by NEW only: not compared
    ]


def test_diff_counts_per_unit_and_groups_transitions_with_reasons() -> None:
    diff = replay.diff_verdicts(diff_verdicts(), OLD, NEW)
    assert [(u.unit, u.judged_both, len(u.moves)) for u in diff.units] == [("math_steps", 4, 2), ("tool_call", 1, 1)]
    math = diff.units[0]
    assert math.transitions == [(("train", "discard", ("rule:forbidden:#### 7",)), 2)]
    assert sorted(m.candidate_id for m in math.moves) == ["c1", "c2"]
    assert {m.task_id for m in math.moves} == {"t1"}
    assert diff.judged_both == 5 and len(diff.moves) == 3


def test_a_later_attempt_under_the_same_version_wins_in_the_diff() -> None:
    t = task("t1")
    verdicts = [verdict(t, OLD, judged("c1", "discard")), verdict(t, NEW, judged("c1", "discard")),
                verdict(t, NEW, judged("c1", "train"), attempt=2)]
    (unit,) = replay.diff_verdicts(verdicts, OLD, NEW).units
    assert unit.transitions == [(("discard", "train", ()), 1)]


def test_the_diff_table_shows_each_transition(capsys) -> None:
    table = replay.diff_table(replay.diff_verdicts(diff_verdicts(), OLD, NEW))
    out = Console(width=160, record=True)
    out.print(table)
    text = out.export_text()
    assert "train → discard" in text and "rule:forbidden:#### 7" in text and "review → train" in text
    assert f"{OLD} → {NEW}" in text


@pytest.mark.parametrize("given, expected", [
    (OLD, OLD), ("rules-v1", OLD), ("strict", NEW), ("rules-v1-01", OLD), ("str", NEW),
])
def test_versions_are_named_in_full_by_label_or_by_prefix(given, expected) -> None:
    assert replay.resolve_version(given, [OLD, NEW]) == expected


def test_unknown_or_ambiguous_versions_are_errors() -> None:
    known = [OLD, "rules-v1-ffffffffff", NEW]
    with pytest.raises(ConfigError, match="ambiguous: rules-v1-0123456789, rules-v1-ffffffffff"):
        replay.resolve_version("rules-v1", known)
    with pytest.raises(ConfigError, match=r"no verdicts of judge version 'v9' \(versions on the topic: rules-v1"):
        replay.resolve_version("v9", known)


# --- the commands, in-process ---------------------------------------------------------------------------


runner = CliRunner()


def fake_state(run_dir: Path, judge_env: dict[str, str] | None = None) -> Path:
    """A state file of an unreachable pipeline: enough for what the commands do before any I/O."""
    run_dir.mkdir(exist_ok=True)
    judge = {"name": "judge", "module": "distillery_judge", "pid": 999999999, "port": 1, "log": str(run_dir / "judge.log"),
             "env": judge_env or {}}
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": "127.0.0.1:1", "topic_prefix": "t", "spec_path": str(SPEC_PATH),
        "broker_pid": None, "processes": [judge],
    }))
    return run_dir


@pytest.fixture
def published() -> list[ReviewDecided]:
    return []


@pytest.fixture
def run_dir(tmp_path, monkeypatch, verdicts, published) -> Path:
    """A fake pipeline whose topics hold ``verdicts`` and no decision; decisions go to ``published``."""
    monkeypatch.setattr(review, "read_verdicts", lambda settings: verdicts)
    monkeypatch.setattr(review, "read_decisions", lambda settings: list(published))
    monkeypatch.setattr(review, "read_sample_history", lambda settings: [])  # the editor sent nothing to review
    monkeypatch.setattr(review, "publish_decision", lambda settings, event: published.append(event))
    monkeypatch.setattr(replay.pipeline, "events", lambda settings, topic, model: verdicts)
    return fake_state(tmp_path / "run")


def test_review_lists_the_queue_as_a_table(run_dir) -> None:
    result = runner.invoke(main.app, ["review", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "review pool: 3 waiting" in result.output
    rows = [line for line in result.output.splitlines() if "cand_" in line]
    assert [row.split()[1] for row in rows] == ["cand_cccc1111", "cand_bbbb2222", "cand_aaaa1111"]
    limited = runner.invoke(main.app, ["review", "--unit", "tool_call", "--limit", "1", "--run-dir", str(run_dir)])
    assert "2 waiting" in limited.output and "showing 1" in limited.output


def test_decide_publishes_one_decision_and_the_candidate_leaves_the_queue(run_dir, published) -> None:
    result = runner.invoke(main.app, ["review", "decide", "cccc1", "--accept", "--note", "fine",
                                      "--reviewer", "ana", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    (event,) = published
    assert (event.candidate.candidate_id, event.decision, event.pool, event.reviewer) == ("cand_cccc1111", "accept", "train", "ana")
    assert "accept into train: cand_cccc111" in result.output
    after = runner.invoke(main.app, ["review", "--run-dir", str(run_dir)])
    assert "cand_cccc1111" not in after.output and "2 waiting" in after.output


def test_decide_outside_the_review_pool_warns_but_publishes(run_dir, published, monkeypatch) -> None:
    monkeypatch.setenv("USER", "operator")
    result = runner.invoke(main.app, ["review", "decide", "cand_cccc2222", "--reject", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "in pool 'train'" in result.stderr
    (event,) = published
    assert event.decision == "reject" and event.pool is None and event.reviewer == "operator"


@pytest.mark.parametrize("args, needles", [
    (["cand_dddd", "--accept"], ("no judged candidate with id 'cand_dddd'",)),
    (["cand_bbbb", "--accept"], ("ambiguous", "cand_bbbb1111", "cand_bbbb2222")),
    (["cand_aaaa1111", "--pool", "train", "--reject"], ("choose one",)),
    (["cand_aaaa1111"], ("say what to do",)),
    (["cand_aaaa1111", "--pool", "review"], ("--pool must be one of",)),
])
def test_decide_errors_are_one_line(run_dir, published, args, needles) -> None:
    result = runner.invoke(main.app, ["review", "decide", *args, "--run-dir", str(run_dir)])
    assert_config_error(result, *needles)
    assert published == []


def test_review_without_a_pipeline_is_an_error(tmp_path) -> None:
    result = runner.invoke(main.app, ["review", "--run-dir", str(tmp_path / "nowhere")])
    assert_config_error(result, "no running pipeline")


def test_replay_needs_a_judge_version(run_dir) -> None:
    assert_config_error(runner.invoke(main.app, ["replay", "--run-dir", str(run_dir)]), "--judge-version LABEL")


def test_replay_under_the_running_version_is_refused(run_dir) -> None:
    label = "rules-v1"  # the example spec's own label: same rules, same version
    result = runner.invoke(main.app, ["replay", "--judge-version", label, "--run-dir", str(run_dir)])
    assert_config_error(result, "already runs", "rules-v1-")


def test_replay_compares_with_the_running_judges_label_override(tmp_path) -> None:
    run_dir = fake_state(tmp_path / "run", judge_env={"DISTILLERY_JUDGE_LABEL": "strict"})
    result = runner.invoke(main.app, ["replay", "--judge-version", "strict", "--run-dir", str(run_dir)])
    assert_config_error(result, "already runs", "strict-")


@pytest.mark.parametrize("label, needle", [("no spaces", "may only use letters"), ("x/y", "may only use letters")])
def test_replay_rejects_a_bad_label(run_dir, label, needle) -> None:
    assert_config_error(runner.invoke(main.app, ["replay", "--judge-version", label, "--run-dir", str(run_dir)]), needle)


def test_replay_with_a_missing_spec_is_an_error(run_dir) -> None:
    result = runner.invoke(main.app, ["replay", "--judge-version", "v2", "--spec", str(run_dir / "nope.yaml"),
                                      "--run-dir", str(run_dir)])
    assert_config_error(result, "nope.yaml")


def test_replay_diff_prints_the_table(run_dir) -> None:
    result = runner.invoke(main.app, ["replay", "diff", "rules-v1", "strict", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "review → discard" in result.output and "rule:forbidden:x" in result.output


@pytest.mark.parametrize("old, new, needles", [
    ("rules-v9", "strict", ("no verdicts of judge version 'rules-v9'", OLD, NEW)),
    ("rules-v1", OLD, ("same judge version",)),
])
def test_replay_diff_errors_are_one_line(run_dir, old, new, needles) -> None:
    assert_config_error(runner.invoke(main.app, ["replay", "diff", old, new, "--run-dir", str(run_dir)]), *needles)


# --- as the user runs it ------------------------------------------------------------------------------------


def test_a_decision_error_is_one_stderr_line_and_exit_code_2(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(COLUMNS="80", NO_COLOR="1", TERM="dumb")
    result = subprocess.run([sys.executable, "-m", "distillery_cli.main", "review", "decide", "cand_x", "--accept",
                             "--reject"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: choose one: --reject, or --accept / --pool POOL"]
    assert "Traceback" not in result.stdout


def test_the_reviewer_defaults_to_user_then_the_login_name(monkeypatch) -> None:
    monkeypatch.setenv("USER", "ana")
    assert review.default_reviewer() == "ana"
    monkeypatch.delenv("USER")
    assert review.default_reviewer() not in ("", "ana")
