"""Recording teachers once and replaying them: the replay yields the very candidates recorded.

The recording is the experiment's input (experiments/tool-calling/recording.jsonl): if replaying it
changed a candidate's text, usage, confidence, trajectory or cached logprobs, every later step of
the experiment would rest on something the teachers never said.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillery.contracts.events import Task
from distillery.contracts.spec import parse_spec
from distillery.domain.backends import ReplayBackend
from distillery.domain.recording import read_tasks
from distillery_cli.workload import build_workload
from distillery_teacher.logic import answer
from distillery_teacher.record import record, request_for

ROOT = Path(__file__).resolve().parents[2]


def same(candidates) -> list[dict]:
    return [c.model_dump(mode="json", exclude={"produced_at"}) for c in candidates]


@pytest.mark.model
def test_replaying_a_recording_yields_the_recorded_candidates(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "experiments" / "tool-calling" / "spec.yaml").read_text())
    data["teachers"]["smollm2"].update(max_new_tokens=16)
    for unit in data["units"].values():  # the small teacher answers everything here, tool loops included
        unit["routing"] = {"strategy": "single", "teachers": ["smollm2"], "max_new_tokens": 16}
    spec = parse_spec(data)
    lines = build_workload(2, 0, units=["tool_call", "tool_boundary"]) + build_workload(1, 0, units=["tool_use"])
    tasks = [Task.model_validate(line) for line in lines]
    out = tmp_path / "recording.jsonl"
    live = record(spec, tasks, out, chunk=3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(live) == len(rows) == 5 and all(r["steps"] for r in rows)
    assert all("logprobs" in step for r in rows for step in r["steps"])  # the teacher caches top-4
    assert any(c.logprobs is not None for c in live)
    # a tool loop is recorded turn by turn: one model turn per tool call, plus the turn that closed
    # it (or, past max_tool_steps, the turn that still called)
    tool_use = next(r for r in rows if r["unit"] == "tool_use")
    assert len(tool_use["steps"]) == len(next(c for c in live if c.task.unit == "tool_use").trajectory) + 1

    replay = ReplayBackend(out, "smollm2")
    replayed = answer([request_for(t, "smollm2", spec) for t in tasks], replay, spec, spec.teachers["smollm2"],
                      "teacher@record")
    assert same(replayed) == same(live)

    # resumable: a second run finds every pair recorded and answers nothing
    assert record(spec, tasks, out) == [] and len(out.read_text().splitlines()) == 5


def test_the_workload_reader_names_the_bad_line(tmp_path: Path) -> None:
    from distillery.contracts.settings import ConfigError

    path = tmp_path / "w.jsonl"
    path.write_text('{"task_id": "t", "unit": "tool_call", "prompt": "p"}\n{"unit": 3}\n')
    with pytest.raises(ConfigError, match=r"w.jsonl:2: not a task"):
        read_tasks(path)
