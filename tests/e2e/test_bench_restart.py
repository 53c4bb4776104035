"""The restart benchmark (bench/restart_state.py) as a smoke test: a tiny history, a full read that
writes checkpoints, a tail, restarts from them, checked equal to a full read; the output's shape
only (timings belong in the benchmark, docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "restart_state.py"


def restart_bench():
    spec = importlib.util.spec_from_file_location("restart_state", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_restart_benchmark_restarts_from_checkpoints_equal_to_a_full_read(tmp_path, capsys) -> None:
    bench = restart_bench()
    out = tmp_path / "result.json"
    assert bench.main(["--events", "400", "--tail", "60", "--check", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures) == {"judge, full read", "editor, full read", "judge, restart", "editor, restart"}
    for service in ("judge", "editor"):
        full, restart = figures[f"{service}, full read"], figures[f"{service}, restart"]
        assert (full["read"], full["from_checkpoint"], full["state"]) == (400, False, 400)
        assert (restart["read"], restart["from_checkpoint"], restart["state"]) == (60, True, 460)
        assert all(f["seconds"] >= f["load_seconds"] + f["save_seconds"] for f in (full, restart))
    assert "check: both restarted states equal a full read" in capsys.readouterr().out


def test_the_restart_benchmark_rejects_a_bad_count_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        restart_bench().main(["--events", "0"])
    assert exited.value.code == 2 and "--events must be at least 1" in capsys.readouterr().err
