"""``bench/pipeline_throughput.py --against-distilabel`` (issue 17): the missing-venv message, and
bench/distilabel_flow.py run in distilabel's venv (``make bench-distilabel``) on a few tasks,
asserting the output's shape only (timings belong in the benchmark)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_bench_pipeline import bench_module


def test_a_missing_distilabel_venv_is_one_line_before_anything_starts(tmp_path, capsys, monkeypatch) -> None:
    bench = bench_module()

    def no_distillery(*args, **kwargs):
        raise AssertionError("Distillery (and its broker) started before distilabel's venv was checked")

    monkeypatch.setattr(bench, "run_distillery", no_distillery)
    python = tmp_path / "no-venv" / "bin" / "python"
    assert bench.main(["--tasks", "8", "--against-distilabel", "--distilabel-python", str(python)]) != 0
    printed = capsys.readouterr()
    lines = (printed.out + printed.err).strip().splitlines()
    assert lines == [f"distilabel's venv {python.parent.parent} is missing (no {python}): "
                     "run 'make bench-distilabel' first"]


def test_distilabel_runs_the_flow_on_the_same_workload(tmp_path) -> None:
    bench = bench_module()
    if not bench.DISTILABEL_PYTHON.is_file():
        pytest.skip("distilabel venv missing: run make bench-distilabel")
    load = bench.workload(36)
    # four exact copies of earlier tasks (new ids) for MinHash to drop, and one task no teacher passes
    for i, task in enumerate(load.tasks[:4]):
        copy = {**task, "task_id": f"copy-{i}"}
        load.tasks.append(copy)
        for rows in load.recordings.values():
            rows.append({**next(r for r in rows if r["task_id"] == task["task_id"]), "task_id": copy["task_id"]})
    for rows in load.recordings.values():
        rows[5] = bench._row(rows[5]["task_id"], "No idea.\n#### 0")
    path = bench.distilabel_workload(load, tmp_path / "workload.json")
    done = subprocess.run([str(bench.DISTILABEL_PYTHON), str(bench.DISTILABEL_FLOW), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # distilabel's own logging goes to stderr
    result = json.loads(lines[0])
    assert set(result) == {"rows", "kept", "seconds", "rows_per_s", "flow_s", "flow_rows_per_s", "batch_size",
                           "distilabel"}
    assert result["rows"] == 40 and result["batch_size"] == "default" and result["distilabel"] == "1.5.3"
    assert 0 < result["kept"] <= 40 - 4 - 1  # the copies flagged, the failing task filtered out
    assert result["seconds"] > 0 and result["rows_per_s"] > 0 and 0 < result["flow_s"] <= result["seconds"]
