"""The pipeline benchmark (bench/pipeline_throughput.py) as a smoke test: a tiny N through the real
flow, then a judge replay, asserting the output's shape only (timings belong in the benchmark,
docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pipeline_throughput.py"
SERVICES = {"router", "judge", "editor", "teacher-alpha", "teacher-beta", "broker"}


def bench_module():
    spec = importlib.util.spec_from_file_location("pipeline_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_runs_the_flow_and_reports_every_service(tmp_path, capsys) -> None:
    bench = bench_module()
    out = tmp_path / "result.json"
    assert bench.main(["--tasks", "24", "--timeout", "180", "--json", str(out), "--replay"]) == 0
    result = json.loads(out.read_text())["distillery"]
    assert result["tasks"] == 24 and result["verdicts"] >= 24 and result["samples"] > 0
    assert result["tasks_per_s"] > 0
    for figure in ("cpu_s_per_1k", "startup_cpu_s", "peak_rss_mib"):
        assert set(result[figure]) == SERVICES and all(v >= 0 for v in result[figure].values())
    assert all(v > 0 for v in result["peak_rss_mib"].values())
    # what each topic holds per task, and when its records were produced (the capacity model's inputs)
    assert {"tasks.v1", "candidates.v1", "verdicts.v1", "samples.v1"} <= {t.split(".", 1)[1]
                                                                            for t in result["bytes_per_task"]}
    assert all(v > 0 for v in result["bytes_per_task"].values())
    assert all(0 <= first <= last for first, last in result["record_span_s"].values())
    # --replay: every recorded candidate judged again under a new label, and the editor caught up
    assert result["replay"]["candidates"] == 48 and result["replay"]["candidates_per_s"] > 0
    printed = capsys.readouterr().out
    assert "tasks/s" in printed and all(name in printed for name in SERVICES) and "judge replay" in printed
