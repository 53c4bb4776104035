"""``distillery students``: rows and lineage from lists of events, and the commands' output and one-line errors.

Topic reads are replaced by lists of events, so nothing here needs a broker; artifact folders are
real folders under ``tmp_path``. One subprocess test checks the user-facing contract (exit code 2,
one stderr line) end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillery.contracts.events import EvaluationCompleted, StudentTrained, SubjectScore
from distillery.contracts.settings import ConfigError
from distillery_cli import loop, main, students
from tests.support import assert_config_error

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
OLD_ID, NEW_ID, OTHER_ID = ("student_aaaa1111" + "0" * 16, "student_aaaa2222" + "0" * 16, "student_bbbb3333" + "0" * 16)
RECIPE = {"base": "tiny-llama", "units": ["math_steps", "tool_call"], "pools": ["train", "refusal"], "epochs": 3,
          "max_steps": 50, "learning_rate": 0.002, "max_seq_len": 256}


# --- builders ---------------------------------------------------------------------------------------


def manifest(samples: int = 17, **fields) -> dict:
    return {"topic": "t.samples.v1", "end_offsets": {"0": 9, "1": 8}, "judge_versions": ["rules-v1-0123456789"],
            "samples": samples, "per_pool": {"refusal": 5, "train": 12}, "per_unit": {"tool_call": 7, "math_steps": 10},
            "per_pathway": {"answer": 10, "process": 7}, "task_ids": ["task-1", "task-2"],
            "sample_ids": [f"smp_{i}" for i in range(samples)], "sha256": "f" * 64, "recipe": RECIPE,
            "retracted": 2, "dropped_over_max_seq_len": [], **fields}


def trained(student_id: str, at: datetime = T0, student: str = "tiny", artifact_dir: Path | str = "/nowhere",
            loss: tuple[float, ...] = (2.5, 1.0, 1.2), **fields) -> StudentTrained:
    return StudentTrained(student_id=student_id, student=student, version=student_id.split("_")[1][:12],
                          artifact_dir=str(artifact_dir), base_model="tiny-llama", recipe=RECIPE,
                          manifest=fields.pop("manifest", manifest()), loss_curve=list(loss), train_seconds=12.34,
                          train_cost_usd=0.0123, produced_by="trainer@test", produced_at=at, **fields)


def score(unit: str, subject: str, accuracy: float) -> SubjectScore:
    return SubjectScore(unit=unit, subject=subject, n=6, accuracy=accuracy, mean_latency_s=0.1,
                        cost_per_request_usd=0.0, mean_output_tokens=10)


def evaluation(student_id: str, after: tuple[float, ...] = (0.5, 1.0), at: datetime = T0,
               report: str = "/nowhere/evaluation/report.md") -> EvaluationCompleted:
    scores = [score(unit, "student:after", acc) for unit, acc in zip(("math_steps", "tool_call"), after)]
    scores += [score("math_steps", "student:before", 0.0), score("math_steps", "teacher:alpha", 0.9)]
    return EvaluationCompleted(evaluation_id=f"eval_{student_id}_{at:%H%M}", student_id=student_id, scores=scores,
                               roi={}, report_path=report, produced_by="evaluator@test", produced_at=at)


def make_artifact(folder: Path, complete: bool = True) -> Path:
    """An artifact folder as the trainer writes it (tiny files)."""
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "dataset.jsonl").write_text('{"sample_id": "smp_0"}\n')
    (folder / "manifest.json").write_text("{}")
    (folder / "lineage.json").write_text(json.dumps({"steps": 30, "tokens": 4096}))
    if complete:
        (folder / "loss.png").write_bytes(b"\x89PNG" + b"\0" * 2044)
    return folder


def on_disk(_: str) -> str:
    return students.ON_DISK


# --- rows ------------------------------------------------------------------------------------------------


def test_a_re_announced_student_is_one_row_kept_as_first_announced() -> None:
    first = trained(OLD_ID, T0)
    again = trained(OLD_ID, T0 + timedelta(hours=1), manifest=manifest(retracted=9))
    (row,) = students.student_rows([again, first], [], state_of=on_disk)
    assert row.trained == first and row.manifest["retracted"] == 2
    assert row.announcements == 2


def test_rows_are_newest_first_and_ties_go_by_student_id() -> None:
    events = [trained(OLD_ID, T0), trained(OTHER_ID, T0 + timedelta(hours=1)), trained(NEW_ID, T0 + timedelta(hours=1)),
              trained(OLD_ID, T0 + timedelta(days=1))]  # a re-announcement does not make a student newer
    rows = students.student_rows(events, [], state_of=on_disk)
    assert [r.student_id for r in rows] == [NEW_ID, OTHER_ID, OLD_ID]


def test_the_latest_evaluation_of_a_student_joins_its_row() -> None:
    evals = [evaluation(OLD_ID, (0.0, 0.5), T0 + timedelta(hours=1)), evaluation(OLD_ID, (0.5, 1.0), T0 + timedelta(hours=2)),
             evaluation("student_unknown", (1.0, 1.0))]
    rows = {r.student_id: r for r in students.student_rows([trained(OLD_ID), trained(NEW_ID)], evals, state_of=on_disk)}
    assert rows[OLD_ID].after_accuracy == pytest.approx(0.75)  # mean over units of student:after only
    assert rows[NEW_ID].evaluation is None and rows[NEW_ID].after_accuracy is None


def test_an_evaluation_without_student_after_scores_has_no_accuracy() -> None:
    assert students.mean_after_accuracy(evaluation(OLD_ID, after=())) is None


def test_rows_of_one_student_only() -> None:
    events = [trained(OLD_ID), trained(OTHER_ID, student="small")]
    assert [r.student_id for r in students.student_rows(events, [], student="small", state_of=on_disk)] == [OTHER_ID]
    assert students.student_rows(events, [], student="huge", state_of=on_disk) == []


def test_the_artifact_folder_is_on_disk_partial_or_missing(tmp_path) -> None:
    assert students.artifact_state(make_artifact(tmp_path / "full")) == students.ON_DISK
    assert students.artifact_state(make_artifact(tmp_path / "part", complete=False)) == students.PARTIAL
    assert students.absent_artifact_files(tmp_path / "part") == ["loss.png"]
    assert students.artifact_state(tmp_path / "gone") == students.MISSING
    (row,) = students.student_rows([trained(OLD_ID, artifact_dir=tmp_path / "gone")], [])
    assert row.on_disk == students.MISSING


# --- ids ----------------------------------------------------------------------------------------------------


@pytest.fixture
def rows() -> list[students.StudentRow]:
    return students.student_rows([trained(OLD_ID), trained(NEW_ID), trained(OTHER_ID)], [], state_of=on_disk)


@pytest.mark.parametrize("given, expected", [
    (OLD_ID, OLD_ID), ("student_aaaa1", OLD_ID), ("aaaa2", NEW_ID), ("bbbb33330000", OTHER_ID), ("  bbbb ", OTHER_ID),
])
def test_a_student_is_found_by_full_id_prefix_bare_hex_or_version(rows, given, expected) -> None:
    assert students.resolve_student(given, rows).student_id == expected


@pytest.mark.parametrize("given, message", [
    ("student_cccc", "no trained student with id 'student_cccc'"),
    ("aaaa", "ambiguous: student_aaaa1111 (tiny), student_aaaa2222 (tiny)"),
    ("student_", "ambiguous"),
    ("  ", "give a student id"),
])
def test_unknown_ambiguous_and_empty_ids_are_config_errors(rows, given, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        students.resolve_student(given, rows)


# --- formatting and lineage -----------------------------------------------------------------------------


def test_counts_are_compact_pools_in_pipeline_order() -> None:
    assert students.compact_counts({"refusal": 5, "train": 12}, students.POOLS) == "train 12, refusal 5"
    assert students.compact_counts({"tool_call": 7, "math_steps": 10}) == "math_steps 10, tool_call 7"
    assert students.compact_counts({"zeta": 1, "train": 2}, students.POOLS) == "train 2, zeta 1"
    assert students.compact_counts({}) == students.compact_counts(None) == "-"


def test_table_cells() -> None:
    row = students.StudentRow(trained(OLD_ID), 1, evaluation(OLD_ID, report="/nowhere/evaluation/report.md"),
                              students.MISSING)
    student, dataset, training, evaluated, artifact = students.row_cells(row)
    assert student.splitlines() == ["tiny", "aaaa11110000", "student_aaaa1111"]
    assert dataset.splitlines() == ["17 samples; judge rules-v1-0123456789", "train 12, refusal 5",
                                    "math_steps 10, tool_call 7", "sha256 ffffffffffff"]
    assert training.splitlines() == ["tiny-llama", "3 epochs, ≤50 steps", "final loss 1.200", "12.3 s, $0.0123"]
    assert evaluated.splitlines() == ["student:after 0.75", "evaluation/report.md"]
    assert artifact.splitlines() == ["[red]missing[/red]", "/nowhere"]


def test_empty_values_read_as_dashes() -> None:
    assert students.format_loss([]) == "-"
    assert students.schedule({"epochs": 1}) == "1 epoch"
    assert students.schedule({}) == "-"
    assert students.short_sha(None) == "-"
    assert students.evaluation_cell(students.StudentRow(trained(OLD_ID), 1, None, students.ON_DISK)) == "-"
    assert students.format_cost(0.0) == "$0"


def test_short_ids_sizes_and_paths() -> None:
    assert students.short_id(OLD_ID) == "student_aaaa1111"
    assert [students.format_size(n) for n in (368, 14_987, 60_830_760)] == ["368 B", "14.6 KiB", "58.0 MiB"]
    assert students.display_path("/a/b/c", Path("/a")) == "b/c"
    assert students.display_path("/x/y", Path("/a")) == "/x/y"


def test_loss_summary() -> None:
    summary = students.loss_summary([3.0, 1.0, 0.5, 0.7])
    assert (summary.points, summary.first, summary.lowest, summary.lowest_step, summary.last) == (4, 3.0, 0.5, 3, 0.7)
    assert students.loss_summary([]) is None
    assert students.loss_line([]) == "loss curve: empty"


def test_artifact_files_are_listed_recursively_with_sizes(tmp_path) -> None:
    files = students.artifact_files(make_artifact(tmp_path / "a"))
    assert [(f.path, f.size) for f in files] == [("dataset.jsonl", 23), ("lineage.json", 29), ("loss.png", 2048),
                                                 ("manifest.json", 2), ("model/config.json", 2)]
    assert students.artifact_files(tmp_path / "gone") == []


def test_lineage_lines_name_offsets_versions_counts_and_dropped() -> None:
    dropped = [f"smp_{i}" for i in range(7)]
    row = students.StudentRow(trained(OLD_ID, manifest=manifest(dropped_over_max_seq_len=dropped)), 2, None, students.MISSING)
    text = "\n".join(students.lineage_lines(row, {"steps": 30, "tokens": 4096}))
    for needle in ("id " + OLD_ID, "announced 2 times", "offsets 0:9 1:8", "judge versions: rules-v1-0123456789",
                   "samples 17 from 2 task(s); retracted at the snapshot: 2", "sha256 " + "f" * 64,
                   "dropped over max_seq_len: 7 (smp_0, smp_1, smp_2, smp_3, smp_4 …)", "30 steps, 4096 tokens",
                   "loss curve: 3 points; first 2.500, min 1.000 (step 2), last 1.200", "evaluation: none yet"):
        assert needle in text


def test_an_older_manifest_without_newer_keys_still_reads() -> None:
    old = {"topic": "t", "samples": 3, "sha256": "ab" * 32}  # before retracted / sample_ids / dropped existed
    row = students.StudentRow(trained(OLD_ID, manifest=old, loss=()), 1, None, students.ON_DISK)
    text = "\n".join(students.lineage_lines(row, None))
    assert "retracted at the snapshot: -" in text and "dropped over max_seq_len: 0" in text
    assert "loss curve: empty" in text
    assert students.row_cells(row)[1].splitlines()[:3] == ["3 samples; judge -", "-", "-"]


# --- the commands, in-process ---------------------------------------------------------------------------


runner = CliRunner()


def fake_state(run_dir: Path) -> Path:
    """A state file of an unreachable pipeline: the commands read topics only through the patched readers."""
    run_dir.mkdir(exist_ok=True)
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": "127.0.0.1:1", "topic_prefix": "t", "spec_path": str(SPEC_PATH),
        "broker_pid": None, "processes": [],
    }))
    return run_dir


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """Three artifacts: OLD (on disk, evaluated, announced twice), NEW (on disk), OTHER (folder gone)."""
    old_dir, new_dir = make_artifact(tmp_path / "tiny" / OLD_ID), make_artifact(tmp_path / "small" / NEW_ID)
    events = [trained(OLD_ID, T0, artifact_dir=old_dir), trained(OLD_ID, T0 + timedelta(days=2), artifact_dir=old_dir),
              trained(NEW_ID, T0 + timedelta(days=1), student="small", artifact_dir=new_dir),
              trained(OTHER_ID, T0 - timedelta(days=1), artifact_dir=tmp_path / "gone")]
    evals = [evaluation(OLD_ID, (0.5, 1.0), report=str(old_dir / "evaluation" / "report.md"))]
    monkeypatch.setattr(students, "read_trained", lambda settings: events)
    monkeypatch.setattr(students, "read_evaluations", lambda settings: evals)
    monkeypatch.setattr(loop, "read_state", lambda settings, spec: loop.LoopState({"tiny": 0}, {}, {}, []))
    return fake_state(tmp_path / "run")


def test_students_lists_one_row_per_artifact_newest_first(run_dir) -> None:
    result = runner.invoke(main.app, ["students", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "trained students, newest first (3)" in result.output
    ids = [word for line in result.output.splitlines() for word in line.split() if word.startswith("student_")]
    assert ids == ["student_aaaa2222", "student_aaaa1111", "student_bbbb3333"]
    assert result.output.count("student:after 0.75") == 1 and "evaluation/report.md" in result.output
    assert result.output.count("│ on disk ") == 2 and result.output.count("│ missing ") == 1


def test_students_of_one_name_and_none(run_dir) -> None:
    result = runner.invoke(main.app, ["students", "--student", "small", "--run-dir", str(run_dir)])
    assert result.exit_code == 0 and "newest first (1)" in result.output and "student_aaaa2222" in result.output
    none = runner.invoke(main.app, ["students", "--student", "huge", "--run-dir", str(run_dir)])
    assert none.exit_code == 0 and "no trained artifact of student 'huge' yet" in none.output


def test_show_prints_the_full_lineage(run_dir) -> None:
    result = runner.invoke(main.app, ["students", "show", "aaaa1", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    for needle in ("id " + OLD_ID, "announced 2 times", "offsets 0:9 1:8", "sha256 " + "f" * 64,
                   "retracted at the snapshot: 2", "30 steps, 4096 tokens", "min 1.000 (step 2)",
                   "mean student:after accuracy 0.75 over 2 unit(s)", "learning_rate: 0.002", "epochs: 3",
                   "train 12, refusal 5", "answer 10, process 7", "model/config.json", "2.0 KiB", "artifact files (5)"):
        assert needle in result.output, needle


def test_show_of_an_artifact_whose_folder_is_gone(run_dir) -> None:
    result = runner.invoke(main.app, ["students", "show", "student_bbbb", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "(on disk: missing)" in result.output and "not on this disk" in result.output
    assert "artifact files" not in result.output


@pytest.mark.parametrize("given, needles", [
    ("student_cccc", ("no trained student with id 'student_cccc'",)),
    ("aaaa", ("ambiguous", "student_aaaa1111", "student_aaaa2222")),
])
def test_show_errors_are_one_line(run_dir, given, needles) -> None:
    assert_config_error(runner.invoke(main.app, ["students", "show", given, "--run-dir", str(run_dir)]), *needles)


def test_students_without_a_pipeline_is_an_error(tmp_path) -> None:
    assert_config_error(runner.invoke(main.app, ["students", "--run-dir", str(tmp_path / "nowhere")]), "no running pipeline")


def test_a_students_error_is_one_stderr_line_and_exit_code_2(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(COLUMNS="80", NO_COLOR="1", TERM="dumb")
    result = subprocess.run([sys.executable, "-m", "distillery_cli.main", "students", "show", "x", "--run-dir",
                             str(tmp_path / "nowhere")], check=False, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: no running pipeline in {tmp_path / 'nowhere'} "
                                          "(start one with 'distillery up')"]
