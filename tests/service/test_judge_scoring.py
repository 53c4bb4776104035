"""The judge process alone on the real broker, with model scoring and self-checks switched on.

The judge scores one unit with the real MiniLM embedding scorer and perturbs every accepted
answer; it must dead-letter a candidate of a unit its spec does not know, and export the
self-check gauges.
"""

from __future__ import annotations

import asyncio
import copy
import urllib.request

import yaml

from distillery.contracts.events import CandidateGenerated, CandidatesJudged, EventDeadLettered, Task
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli import stack
from distillery_cli.workload import build_workload
from tests.support import ROOT, candidate
from tests.waiting import events, wait_for


def cand(task: Task, text: str, teacher: str) -> CandidateGenerated:
    return candidate(task, text, teacher, expected=2)

def test_judge_scores_with_minilm_checks_itself_and_dead_letters_unknown_units(tmp_path, settings):
    data = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    data = copy.deepcopy(data)
    data["units"]["math_steps"]["judge"] = {
        "dimensions": [{"name": "reference", "scorer": "reference", "weight": 2},
                       {"name": "similarity", "scorer": "embedding", "weight": 1}],
        "self_checks": {"perturbation_rate": 1.0, "min_agreement": 0.5}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_path)
    asyncio.run(ensure_topics(settings, settings.topics.all_topics(list(spec.teachers))))

    tasks = [Task.model_validate(line) for line in build_workload(3, 0) if line["unit"] == "math_steps"]
    cands = []
    for task in tasks:
        cands += [cand(task, f"Add the parts.\n#### {task.reference.answer}", "qwen-coder"),
                  cand(task, f"#### {int(task.reference.answer) + 1}", "smollm2")]
    stranger = cand(tasks[0].model_copy(update={"task_id": "t-unknown", "unit": "astrology"}), "#### 1", "qwen-coder")
    items = [(settings.topics.candidates, c.key, c.model_dump_json().encode()) for c in [*cands, stranger]]
    asyncio.run(produce_all(settings, items))

    env = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, spec_path, tmp_path)
    judge = stack.start_process("judge", "distillery_judge", env, tmp_path)
    try:
        verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                            lambda v: len(v) >= len(tasks), timeout_s=120)
        assert len(verdicts) == len(tasks)
        for verdict in verdicts:
            right, wrong = sorted(verdict.candidates, key=lambda jc: jc.rank)
            assert (right.pool, wrong.pool) == ("train", "contrastive")
            assert right.scorers == {"reference": "reference:final_answer", "similarity": "embedding:all-MiniLM-L6-v2"}
            assert right.score > wrong.score and wrong.correction == f"#### {verdict.task.reference.answer}"
            assert verdict.relation == "conflict" and "final_answer_differs" in verdict.relation_reasons
            assert verdict.self_checks == {"perturbation_caught": True}
        dlq = wait_for(lambda: events(settings, settings.topics.dlq, EventDeadLettered), lambda d: len(d) >= 1)
        assert [d.record_key for d in dlq] == ["t-unknown"] and "unknown unit 'astrology'" in dlq[0].error
        with urllib.request.urlopen(f"http://127.0.0.1:{judge.port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'distillery_judge_perturbation_catch_rate{unit="math_steps"} 1.0' in metrics
        assert 'distillery_judge_gate_closed{unit="math_steps"} 0.0' in metrics
        assert 'distillery_judge_relations_total{relation="conflict",unit="math_steps"} 3.0' in metrics
    finally:
        stack.stop_process(judge.pid)
