"""The router alone on the real broker: experts, chain and value route as declared."""

from __future__ import annotations

import asyncio
import urllib.request

import yaml

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    GenerationRequested,
    JudgedCandidate,
    TaskSubmitted,
    Trace,
    new_task,
)
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli import stack
from tests.service.test_services_alone import stop
from tests.support import ROOT
from tests.waiting import events, wait_for


def strategies_spec(tmp_path):
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    units = spec["units"]
    units["tool_call"]["routing"] = {"strategy": "experts", "default": "smollm2",
                                     "rules": [{"teacher": "qwen-coder", "difficulty": "hard"}]}
    units["math_steps"]["routing"] = {"strategy": "chain", "teachers": ["smollm2", "qwen-coder"],
                                      "roles": ["retrieval", "reasoning"]}
    units["tool_boundary"]["routing"] = {"strategy": "value", "teachers": ["smollm2", "qwen-coder"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_router(settings, tmp_path, spec_path):
    env = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, spec_path, tmp_path)
    info = stack.start_process("router", "distillery_router", env, tmp_path)
    wait_for(lambda: stack.ready(info) or not stack.pid_alive(info.pid), lambda ok: ok, timeout_s=60)
    assert stack.pid_alive(info.pid), stack.last_line(info.log)
    return info


def publish(settings, topic, evts):
    asyncio.run(produce_all(settings, [(topic, e.key, e.model_dump_json().encode()) for e in evts]))


def submitted(task):
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id))


def requests_of(settings, teacher):
    return events(settings, settings.topics.generation_requests(teacher), GenerationRequested)


def test_each_strategy_routes_as_declared(tmp_path, settings):
    spec_path = strategies_spec(tmp_path)
    asyncio.run(ensure_topics(settings, settings.topics.all_topics(["smollm2", "qwen-coder"])))
    # history for the value strategy: qwen-coder's boundary answers were accepted, smollm2's were not
    history = []
    for i in range(30):
        for teacher, pool in (("smollm2", "discard"), ("qwen-coder", "refusal")):
            jc = JudgedCandidate(candidate_id=f"h{i}{teacher}", teacher_id=teacher, text="x", pool=pool, rank=1,
                                 score=1.0, cost_usd=0.001)
            task = new_task("tool_boundary", f"history {i}")
            history.append(CandidatesJudged(verdict_id=f"hv{i}{teacher}", task=task, judge_version="j",
                                            candidates=[jc], produced_by="test", trace=Trace(task_id=task.task_id)))
    publish(settings, settings.topics.verdicts, history)
    router = start_router(settings, tmp_path, spec_path)
    try:
        hard = new_task("tool_call", "hard one", metadata={"difficulty": "hard"})
        easy = new_task("tool_call", "easy one", metadata={"difficulty": "easy"})
        math = new_task("math_steps", "What is 3 boxes of 4 eggs?")
        boundary = [new_task("tool_boundary", f"What is the weather on planet {i}?") for i in range(10)]
        publish(settings, settings.topics.tasks, [submitted(t) for t in (hard, easy, math, *boundary)])

        qwen = wait_for(lambda: requests_of(settings, "qwen-coder"), lambda r: len(r) >= 8)
        smol = requests_of(settings, "smollm2")
        by_task = {r.task.task_id: r for r in [*qwen, *smol]}
        assert by_task[hard.task_id].teacher_id == "qwen-coder" and by_task[hard.task_id].route_rule.startswith("rules[0]")
        assert by_task[easy.task_id].teacher_id == "smollm2" and by_task[easy.task_id].route_rule == "default"
        first = by_task[math.task_id]
        assert first.teacher_id == "smollm2" and first.chain.role == "retrieval"
        picks = [by_task[t.task_id].teacher_id for t in boundary]
        assert picks.count("qwen-coder") >= 9, picks
        assert all(by_task[t.task_id].route_score is not None for t in boundary)

        # the retrieval step's answer moves the chain on to the reasoning teacher, carrying it
        step = CandidateGenerated(candidate_id="cand-step1", request_id=first.request_id, task=math,
                                  teacher_id="smollm2", strategy="chain", route_reason=first.route_reason,
                                  expected_candidates=1, text="3 boxes, 4 eggs each", chain=first.chain,
                                  produced_by="teacher@test", trace=Trace(task_id=math.task_id))
        publish(settings, settings.topics.candidates, [step])
        second = wait_for(lambda: [r for r in requests_of(settings, "qwen-coder") if r.chain],
                          lambda r: len(r) == 1)[0]
        assert second.chain.role == "reasoning" and second.chain.prior[0].text == "3 boxes, 4 eggs each"

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{router.port}/metrics").read().decode()
        assert 'distillery_router_acceptance_rate{teacher="qwen-coder",unit="tool_boundary"} 1.0' in metrics
    finally:
        stop(router)

    # the learned table survives a restart (rebuilt from the verdicts topic)
    router = start_router(settings, tmp_path, spec_path)
    try:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{router.port}/metrics").read().decode()
        assert 'distillery_router_acceptance_rate{teacher="smollm2",unit="tool_boundary"} 0.0' in metrics
        assert 'distillery_router_judged_candidates{teacher="qwen-coder",unit="tool_boundary"} 30.0' in metrics
    finally:
        stop(router)
