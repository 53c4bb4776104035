"""A tool-trajectory unit end to end: router, a replay teacher running the act-observe loop over
the real tool registry, judge and editor, on the real broker."""

from __future__ import annotations

import asyncio
import json
import re

import yaml

from distillery.contracts.events import CandidateGenerated, CandidatesJudged, SampleCurated
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import produce_all
from distillery_cli import stack
from distillery_cli.workload import build_workload
from tests.support import ROOT
from tests.waiting import events, wait_for

UNITS = {"kilometres": "km", "metres": "m", "hours": "hour", "seconds": "s", "kilograms": "kg", "grams": "g",
         "minutes": "minute"}


def tool_calls_for(prompt: str) -> list[dict]:
    """What a competent teacher calls for each kind of question in the workload."""
    if m := re.match(r"Convert ([\d.]+) (\w+) to (\w+)\.", prompt):
        return [{"name": "convert_units", "arguments": {"value": float(m[1]), "from_unit": UNITS[m[2]], "to_unit": UNITS[m[3]]}}]
    if m := re.match(r"What is (.+)\?", prompt):
        return [{"name": "calculator", "arguments": {"expression": m[1]}}]
    return [{"name": "lookup", "arguments": {"topic": prompt}}]


def test_tool_trajectory_unit_runs_end_to_end(tmp_path, kafka_bootstrap, topic_prefix, settings):
    workload = build_workload(4, 0, units=["tool_use"])
    rows = []
    for task in workload:
        calls = tool_calls_for(task["prompt"])
        good = [json.dumps(c) for c in calls] + [f"FINAL: {task['reference']['answer']}"]
        rows.append({"teacher_id": "alpha", "task_id": task["task_id"], "texts": good, "completion_tokens": 12})
        # beta sends arguments that fail the tool's schema, sees the error, then guesses
        bad = json.dumps({"name": "convert_units", "arguments": {"value": "lots"}})
        rows.append({"teacher_id": "beta", "task_id": task["task_id"], "texts": [bad, "FINAL: 1"], "completion_tokens": 12})
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    spec["teachers"] = {t: {"backend": "replay", "replay_path": str(replay), "price": {"per_1k_completion": 0.01}}
                        for t in ("alpha", "beta")}
    for unit in spec["units"].values():
        unit["routing"] = {"strategy": "competition", "teachers": ["alpha", "beta"]}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap)
    try:
        stack.wait_ready(state, timeout_s=120)
        submitted, errors = parse_tasks("\n".join(json.dumps(t) for t in workload), load_spec(spec_path),
                                        settings.max_task_bytes, "test")
        assert not errors
        asyncio.run(produce_all(settings, [(settings.topics.tasks, e.task_id, e.model_dump_json().encode()) for e in submitted]))
        verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                            lambda v: len(v) == len(workload), timeout_s=120)
        for verdict in verdicts:
            by_teacher = {jc.teacher_id: jc for jc in verdict.candidates}
            alpha, beta = by_teacher["alpha"], by_teacher["beta"]
            assert alpha.pool == "train" and alpha.trajectory and all(s.error is None for s in alpha.trajectory)
            assert alpha.trajectory[0].observation, "the real tool ran and its result was observed"
            assert beta.pool == "contrastive" and beta.trajectory[0].error.startswith("invalid_arguments")
            assert beta.correction == f"#### {verdict.task.reference.answer}"
            assert "missing_required_argument:convert_units.from_unit" in beta.trajectory[0].error
        candidates = events(settings, settings.topics.candidates, CandidateGenerated)
        assert all(c.usage.completion_tokens == 12 * (len(c.trajectory) + 1) for c in candidates)
        # alpha's right answers: an answer and a trajectory sample each; beta's wrong ones: one contrast each
        samples = wait_for(lambda: events(settings, settings.topics.samples, SampleCurated),
                           lambda s: len(s) == 3 * len(workload), timeout_s=60)
        contrasts = [s for s in samples if s.pool == "contrastive"]
        assert len(contrasts) == len(workload) and all(s.pathway == "answer" and s.contrast for s in contrasts)
        trajectories = [s for s in samples if s.pathway == "tool_trajectory"]
        assert len(trajectories) == len(workload)
        assert all(s.tool_steps and s.tool_steps[0]["observation"] and s.final.startswith("####") for s in trajectories)
    finally:
        stack.stop(state)
