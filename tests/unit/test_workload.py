"""Unit tests for distillery_cli.workload (real BFCL and GSM8K data from the installed wheels)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from distillery.contracts.events import Task, new_task
from distillery.domain.scoring import check_reference

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "workload.py"


from distillery_cli import workload  # noqa: E402

UNITS = ("tool_call", "tool_boundary", "math_steps")


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    return workload.build_workload(per_unit=20, eval_per_unit=8, seed=0)


def test_counts_per_unit_and_split(lines) -> None:
    assert len(lines) == 3 * (20 + 8)
    counts = Counter((line["unit"], line["split"]) for line in lines)
    for unit in UNITS:
        assert counts[(unit, "train")] == 20
        assert counts[(unit, "eval")] == 8


def test_lines_are_valid_tasks_with_their_own_ids(lines) -> None:
    for line in lines:
        assert set(line) == {"task_id", "unit", "prompt", "tools", "reference", "split", "metadata"}
        task = Task.model_validate(line)
        assert task.task_id == new_task(line["unit"], line["prompt"], tools=line["tools"]).task_id
        assert line["prompt"].strip() and not line["prompt"].startswith("[")
        meta = line["metadata"]
        assert meta["difficulty"] in {"easy", "medium", "hard"}
        assert all(isinstance(v, str) for v in meta.values())
    assert len({line["task_id"] for line in lines}) == len(lines)


def test_unit_shapes(lines) -> None:
    for line in lines:
        meta, ref = line["metadata"], line["reference"]
        if line["unit"] == "tool_call":
            assert meta["source"].startswith("bfcl:simple_python_") and meta["scenario"] == "tool_selection"
            assert len(line["tools"]) == 1 and set(line["tools"][0]) == {"name", "description", "parameters"}
            assert list(ref) == ["tool_calls"] and list(ref["tool_calls"][0]) == [line["tools"][0]["name"]]
        elif line["unit"] == "tool_boundary":
            assert meta["source"].startswith("bfcl:irrelevance_") and meta["scenario"] == "irrelevance"
            assert ref == {"no_call": True} and line["tools"]
        else:
            assert meta["source"].startswith("gsm8k:") and meta["scenario"] == "word_problem"
            assert line["tools"] == [] and list(ref) == ["answer"]
            assert ref["answer"].lstrip("-").replace(".", "", 1).isdigit()
            assert int(meta["steps"]) <= 4 and meta["difficulty"] in {"easy", "medium"}


def test_references_agree_with_source_data(lines) -> None:
    gsm8k = workload._gsm8k()
    _, truths = workload._bfcl("simple_python")
    for line in lines:
        source = line["metadata"]["source"]
        if source.startswith("gsm8k:"):
            row = gsm8k[int(source.split(":")[1])]
            assert row["question"].strip() == line["prompt"]
            assert row["answer"].rsplit("####", 1)[1].strip().replace(",", "") == line["reference"]["answer"]
            # the shipped solution itself passes the reference check
            task = Task.model_validate(line)
            assert check_reference(task, row["answer"], "final_answer").correct is True
        elif source.startswith("bfcl:simple_python_"):
            assert line["reference"]["tool_calls"] == truths[source.split(":")[1]]


def test_train_and_eval_are_disjoint(lines) -> None:
    train = [line for line in lines if line["split"] == "train"]
    evals = [line for line in lines if line["split"] == "eval"]
    assert {x["task_id"] for x in train}.isdisjoint({x["task_id"] for x in evals})
    assert {x["prompt"] for x in train}.isdisjoint({x["prompt"] for x in evals})
    assert {x["metadata"]["source"] for x in train}.isdisjoint({x["metadata"]["source"] for x in evals})


def test_large_workload_stays_disjoint() -> None:
    big = workload.build_workload(per_unit=200, eval_per_unit=30, seed=3)
    train = {x["prompt"] for x in big if x["split"] == "train"}
    evals = {x["prompt"] for x in big if x["split"] == "eval"}
    assert train.isdisjoint(evals)
    assert len({x["task_id"] for x in big}) == len(big) == 3 * 230


def test_deterministic_and_seeded(lines) -> None:
    again = workload.build_workload(per_unit=20, eval_per_unit=8, seed=0)
    assert [x["task_id"] for x in again] == [x["task_id"] for x in lines]
    assert again == lines
    other = workload.build_workload(per_unit=20, eval_per_unit=8, seed=1)
    assert {x["task_id"] for x in other} != {x["task_id"] for x in lines}


def test_eval_set_does_not_depend_on_train_size(lines) -> None:
    bigger = workload.build_workload(per_unit=50, eval_per_unit=8, seed=0)
    assert [x["task_id"] for x in bigger if x["split"] == "eval"] == [x["task_id"] for x in lines if x["split"] == "eval"]
    small_train = {x["task_id"] for x in lines if x["split"] == "train"}
    assert small_train <= {x["task_id"] for x in bigger if x["split"] == "train"}


def test_prefers_short_math_problems(lines) -> None:
    math = [x for x in lines if x["unit"] == "math_steps"]
    assert all(len(x["prompt"]) <= 300 for x in math)


def test_units_filter_and_errors() -> None:
    only = workload.build_workload(per_unit=3, eval_per_unit=2, units=["math_steps"])
    assert {x["unit"] for x in only} == {"math_steps"} and len(only) == 5
    with pytest.raises(ValueError):
        workload.build_workload(per_unit=500, eval_per_unit=8)  # irrelevance has 240 items
    with pytest.raises(ValueError):
        workload.build_workload(per_unit=1, eval_per_unit=1, units=["legal"])


def test_fast() -> None:
    start = time.perf_counter()
    workload.build_workload(per_unit=20, eval_per_unit=8, seed=7)
    assert time.perf_counter() - start < 2.0


def test_cli_writes_jsonl(tmp_path: Path, lines) -> None:
    out = tmp_path / "sub" / "workload.jsonl"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--per-unit", "20", "--eval-per-unit", "8", "--out", str(out), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    written = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert written == lines
    assert "84 tasks" in result.stderr
