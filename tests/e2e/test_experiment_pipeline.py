"""``distillery experiment`` end to end on a tiny setting: the committed recording replayed through
all six services, the tiny student, two variants, one seed, a few tasks per unit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from distillery_cli.main import app
from tests.support import assert_config_error

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "tool-calling"


def test_the_experiment_replays_the_recording_and_writes_the_results(tmp_path, kafka_bootstrap, topic_prefix,
                                                                     monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out, run_dir = tmp_path / "results.json", tmp_path / "run"
    args = ["experiment", str(EXPERIMENT), "--student", "tiny", "--variants", "full,naive", "--seeds", "1",
            "--train-per-unit", "3", "--eval-per-unit", "2", "--out", str(out), "--run-dir", str(run_dir),
            "--timeout-s", "900"]
    result = CliRunner().invoke(app, [*args, "--prefix", topic_prefix])
    assert result.exit_code == 0, result.output
    assert "experiment finished in" in result.output

    res = json.loads(out.read_text())
    assert set(res) >= {"scores", "differences", "command", "wall_s", "date"} and res["wall_s"] > 0
    units = {"tool_call", "tool_boundary", "tool_use"}
    subjects = {(r["unit"], r["subject"]) for r in res["scores"]}
    expected = {"teacher:qwen-coder", "student:before", "variant:full", "variant:naive"}
    for unit in units:
        assert {(unit, s) for s in expected} <= subjects
    assert {(u, "teacher:smollm2") for u in ("tool_call", "tool_boundary")} <= subjects
    # every subject is scored on every held-out task: 2 per unit, answered or not
    assert {r["n"] for r in res["scores"]} == {2}
    assert {(d["unit"], d["variant"], d["against"]) for d in res["differences"]} == \
        {(u, "naive", "full") for u in units | {"all"}}
    for d in res["differences"]:
        assert d["lo"] <= d["diff"] <= d["hi"]

    # both variants read the same snapshot of the samples topic
    lineages = [json.loads(p.read_text()) for p in (run_dir / "artifacts" / "tiny").glob("*/lineage.json")]
    assert len(lineages) == 2
    samples_topic = f"{topic_prefix}.samples.v1"
    snapshots = {json.dumps(lin["manifest"]["snapshot"][samples_topic], sort_keys=True) for lin in lineages}
    assert len(snapshots) == 1

    # run again: every run is found by its id, nothing is retrained
    before = {p.name: p.stat().st_mtime for p in (run_dir / "artifacts" / "tiny").glob("*/lineage.json")}
    again = CliRunner().invoke(app, [*args, "--prefix", topic_prefix + "b"])
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime for p in (run_dir / "artifacts" / "tiny").glob("*/lineage.json")} == before


def test_a_recording_that_misses_tasks_stops_before_anything_runs(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("spec.yaml", "workload.jsonl"):
        shutil.copy(EXPERIMENT / name, folder / name)
    rows = (EXPERIMENT / "recording.jsonl").read_text().splitlines()
    (folder / "recording.jsonl").write_text("\n".join(rows[5:]) + "\n")  # five answers lost
    result = CliRunner().invoke(app, ["experiment", str(folder), "--run-dir", str(tmp_path / "run")])
    assert_config_error(result, "the recording lacks 5 answer(s)", json.loads(rows[0])["task_id"])
    assert not (tmp_path / "run" / "state.json").exists()  # no broker, no service was started
