"""Fault test: SIGKILL the judge mid-stream, restart it, and check nothing was lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

from distillery.contracts.events import CandidatesJudged, SampleCurated
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import produce_all
from distillery_cli import stack
from tests.support import replay_spec
from tests.waiting import events, wait_for


def test_judge_sigkill_mid_stream_loses_nothing_and_doubles_nothing(tmp_path, kafka_bootstrap, topic_prefix, settings):
    # beta replays at its recorded pace, so the judge always holds tasks waiting for beta's candidate.
    spec_path, workload = replay_spec(tmp_path, per_unit=40, eval_per_unit=2, beta_latency_s=0.1, beta_paced=True)
    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap)
    try:
        stack.wait_ready(state, timeout_s=120)
        text = "\n".join(json.dumps(t) for t in workload)
        submitted, _ = parse_tasks(text, load_spec(spec_path), settings.max_task_bytes, "test")
        asyncio.run(produce_all(settings, [(settings.topics.tasks, e.task_id, e.model_dump_json().encode()) for e in submitted]))

        n = len(workload)
        judge = state.process("judge")
        # kill once the judge has published some verdicts and holds tasks still waiting for beta
        wait_for(lambda: (len(events(settings, settings.topics.verdicts, CandidatesJudged)), _open_tasks(judge.port)),
                 lambda seen: seen[0] >= 5 and seen[1] > 0, timeout_s=120, every_s=0.1)
        os.kill(judge.pid, signal.SIGKILL)
        verdicts_at_kill = len(events(settings, settings.topics.verdicts, CandidatesJudged))
        assert verdicts_at_kill < n, "the kill must land mid-stream"
        time.sleep(1)
        restarted = stack.start_process("judge", judge.module, judge.env, tmp_path / "run")
        state.processes = [p if p.name != "judge" else restarted for p in state.processes]

        verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                            lambda v: len({x.task.task_id for x in v}) >= n, timeout_s=180)
        time.sleep(3)  # let any duplicate surface before counting
        verdicts = events(settings, settings.topics.verdicts, CandidatesJudged)
        per_task = {}
        for verdict in verdicts:
            per_task[verdict.task.task_id] = per_task.get(verdict.task.task_id, 0) + 1
        assert set(per_task) == {t["task_id"] for t in workload}, "no task lost"
        assert max(per_task.values()) == 1, "exactly one verdict per task"
        assert all(v.missing_candidates == 0 for v in verdicts), "every candidate reached its verdict"

        samples = events(settings, settings.topics.samples, SampleCurated)
        assert samples and len({s.sample_id for s in samples}) == len(samples), "no sample doubled"
    finally:
        stack.stop(state)


def _open_tasks(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("distillery_judge_open_tasks "):
                return float(line.split()[1])
    return 0.0
