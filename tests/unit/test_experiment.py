"""The experiment command's pieces: task selection, the recording check, the replay spec, results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillery.contracts.events import EvaluationCompleted, SubjectScore, Task, Variant
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import load_spec
from distillery_cli.experiment import missing_answers, replay_spec, results, select_tasks

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "tool-calling"


def task(i: int, unit: str, split: str) -> Task:
    return Task(task_id=f"{unit}-{split}-{i}", unit=unit, prompt=f"q{i}", split=split)


def test_select_tasks_keeps_the_first_n_of_each_unit_and_split_in_workload_order() -> None:
    tasks = [task(i, u, s) for s in ("train", "eval") for i in range(4) for u in ("tool_call", "tool_use")]
    chosen = select_tasks(tasks, 2, 1)
    assert [t.task_id for t in chosen] == ["tool_call-train-0", "tool_use-train-0", "tool_call-train-1",
                                            "tool_use-train-1", "tool_call-eval-0", "tool_use-eval-0"]
    assert select_tasks(tasks, None, None) == tasks


def test_a_recording_that_misses_answers_lists_them(tmp_path: Path) -> None:
    spec = load_spec(EXPERIMENT / "spec.yaml")
    tasks = [task(0, "tool_call", "train"), task(1, "tool_use", "eval")]
    recording = tmp_path / "recording.jsonl"
    recording.write_text(json.dumps({"task_id": "tool_call-train-0", "teacher_id": "smollm2", "steps": []}) + "\n")
    # tool_call is a competition of both teachers; tool_use goes to qwen-coder alone
    assert missing_answers(spec, tasks, recording) == ["tool_call-train-0/qwen-coder", "tool_use-eval-1/qwen-coder"]
    with pytest.raises(ConfigError, match="no recording"):
        missing_answers(spec, tasks, tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="math_steps"):
        missing_answers(spec, [task(0, "math_steps", "train")], recording)


def test_the_replay_spec_swaps_only_the_backends(tmp_path: Path) -> None:
    recording = tmp_path / "recording.jsonl"
    recording.write_text("")
    path = replay_spec(EXPERIMENT / "spec.yaml", recording, tmp_path / "run" / "spec.yaml")
    original, replayed = load_spec(EXPERIMENT / "spec.yaml"), load_spec(path)
    for teacher_id, teacher in replayed.teachers.items():
        assert teacher.backend == "replay" and teacher.replay_path == str(recording.resolve())
        assert teacher.price == original.teachers[teacher_id].price
        assert teacher.logprobs == original.teachers[teacher_id].logprobs
    assert teacher.tokenizer_family() == original.teachers[teacher_id].tokenizer_family()
    assert replayed.units == original.units and replayed.students == original.students
    assert yaml.safe_load(path.read_text())["teachers"]["smollm2"]["tokenizer"] == "smollm2"


def evaluation(name: str, seed: int, after: float, before: float | None = None) -> EvaluationCompleted:
    scores = [SubjectScore(unit="tool_call", subject="teacher:qwen-coder", n=4, accuracy=0.5, mean_latency_s=1,
                           cost_per_request_usd=0.001, mean_output_tokens=20, unanswered={"no answer recorded": 1}),
              SubjectScore(unit="tool_call", subject="student:after", n=4, accuracy=after, mean_latency_s=0.1,
                           cost_per_request_usd=0.0001, mean_output_tokens=20)]
    if before is not None:
        scores.append(SubjectScore(unit="tool_call", subject="student:before", n=4, accuracy=before,
                                   mean_latency_s=0.1, cost_per_request_usd=0.0001, mean_output_tokens=40))
    variant = Variant(name=name, bucket="curated", overrides={"seed": seed}, experiment_id="x", members=4)
    return EvaluationCompleted(evaluation_id=f"e-{name}-{seed}", student_id=f"s-{name}-{seed}", scores=scores,
                               roi={}, report_path="r", variant=variant, produced_by="test")


def test_results_have_the_documented_shape() -> None:
    members = [evaluation("full", 0, 0.5, before=0.0), evaluation("full", 1, 0.75, before=0.0),
               evaluation("naive", 0, 0.25), evaluation("naive", 1, 0.25)]
    rows = [{"unit": "tool_call", "variant": "full", "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "samples": 10},
            {"unit": "tool_call", "variant": "naive", "diff": -0.375, "ci_low": -0.75, "ci_high": 0.0, "samples": 10},
            {"unit": "all", "variant": "naive", "diff": -0.375, "ci_low": -0.75, "ci_high": 0.0, "samples": 10}]
    res = results(members, rows, "distillery experiment", 12.34)
    assert set(res) >= {"scores", "differences", "command", "wall_s", "date"}
    subjects = [(r["subject"], r["seed"]) for r in res["scores"]]
    # the teacher once (its recorded answers are the same in every run), before per full seed, each run
    assert sorted(subjects, key=str) == sorted([("teacher:qwen-coder", None), ("student:before", 0),
                                                ("student:before", 1), ("variant:full", 0), ("variant:full", 1),
                                                ("variant:naive", 0), ("variant:naive", 1)], key=str)
    for row in res["scores"]:
        assert set(row) >= {"unit", "subject", "seed", "accuracy", "n"}
    teacher = next(r for r in res["scores"] if r["subject"].startswith("teacher:"))
    assert teacher["unanswered"] == {"no answer recorded": 1}
    assert res["differences"] == [
        {"unit": "tool_call", "variant": "naive", "against": "full", "diff": -0.375, "lo": -0.75, "hi": 0.0},
        {"unit": "all", "variant": "naive", "against": "full", "diff": -0.375, "lo": -0.75, "hi": 0.0}]
    assert res["wall_s"] == 12.3 and res["command"] == "distillery experiment"


def test_learning_curve_points_are_variants_with_a_per_unit_cap() -> None:
    from distillery_cli.attribute import variants_for

    recipe = load_spec(EXPERIMENT / "spec.yaml").students["smollm2"]
    full, point = variants_for(recipe, ["full", "samples_25"], 1, None, "x")
    assert point.name == "samples_25" and point.bucket == "curated" and not point.match
    assert point.overrides == {"max_samples_per_unit": 25, "seed": 0}
    with pytest.raises(ConfigError, match="samples_<n>"):
        variants_for(recipe, ["full", "samples_many"], 1, None, "x")


def test_the_report_says_why_a_subject_has_unanswered_tasks(capsys) -> None:
    from distillery_cli import main

    main._print_report(evaluation("full", 0, 0.5, before=0.0).model_copy(update={"variant": None}))
    out = capsys.readouterr().out
    assert "qwen-coder on tool_call: 1 of 4 unanswered (1 no answer recorded)" in out


def test_the_results_plot_is_a_png(tmp_path: Path) -> None:
    from distillery_cli.experiment import plot_results

    members = [evaluation("full", 0, 0.5, before=0.0), evaluation("full", 1, 0.75, before=0.0),
               evaluation("naive", 0, 0.25)]
    res = results(members, [], "distillery experiment", 1.0)
    path = plot_results(res, tmp_path / "results.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
