"""The hot-path benchmark (bench/hot_path.py) as a smoke test: a few tasks through every service's
decode, handler and encode in one process; the flow's counts and the output's shape only (timings
belong in the benchmark, docs/benchmarks.md). It runs in its own process: it builds each service's
Prometheus metrics, which a test process may already hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hot_path.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def test_the_hot_path_benchmark_runs_the_flow_hop_by_hop(tmp_path) -> None:
    out = tmp_path / "hot.json"
    done = run("--tasks", "40", "--batch", "16", "--json", str(out))
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    # two teachers answer every task, the judge gives one verdict a task, the editor curates some
    assert (figures["tasks"], figures["candidates"], figures["judge_outputs"]) == (40, 80, 40)
    assert 0 < figures["editor_outputs"] <= 80
    services = ["router", "teacher-alpha", "teacher-beta", "judge", "judge-peers", "editor", "all"]
    assert list(figures["cpu_ms_per_task"]) == services
    assert all(ms > 0 for ms in figures["cpu_ms_per_task"].values())
    assert "CPU ms / task" in done.stdout


def test_the_hot_path_benchmark_rejects_a_bad_count_in_one_line() -> None:
    done = run("--tasks", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        "--tasks and --batch must be at least 1")
