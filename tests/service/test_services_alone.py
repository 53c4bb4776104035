"""Service tests: one service process against the real broker, spying on its output topics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from distillery.contracts.events import (
    CandidatesJudged,
    EventDeadLettered,
    GenerationRequested,
    JudgedCandidate,
    SampleCurated,
    TaskSubmitted,
    Trace,
    new_task,
)
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli import stack
from tests.support import ROOT
from tests.waiting import events, wait_for

SPEC = ROOT / "examples" / "spec.yaml"


def run_service(name: str, settings, tmp_path, **env) -> stack.ProcessInfo:
    base = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, SPEC, tmp_path,
                             {"DISTILLERY_MAX_TASK_BYTES": "4096", **env})
    info = stack.start_process(name, f"distillery_{name}", base, tmp_path)
    wait_for(lambda: stack.ready(info) or not stack.pid_alive(info.pid), lambda ok: ok, timeout_s=60)
    assert stack.pid_alive(info.pid), stack.last_line(info.log)
    return info


def stop(info: stack.ProcessInfo) -> None:
    stack._signal(info.pid, 15)
    stack._wait_gone([info.pid], 10)


def test_router_routes_and_dead_letters_bad_input(tmp_path, settings):
    router = run_service("router", settings, tmp_path)
    try:
        spec = load_spec(SPEC)
        ok = new_task("tool_call", "Find the area of a triangle with base 10 and height 5.")
        unknown = new_task("poetry", "Write a haiku.")
        big = new_task("math_steps", "x" * 9000)  # over the 4 KiB limit plus the envelope allowance
        items = [(settings.topics.tasks, t.task_id, TaskSubmitted(task_id=t.task_id, task=t, produced_by="test",
                                                                     trace=Trace(task_id=t.task_id)).model_dump_json().encode())
                 for t in (ok, unknown, big)]
        items.append((settings.topics.tasks, "junk", b"\xff\xfe not json"))
        asyncio.run(produce_all(settings, items))
        teachers = spec.units["tool_call"].routing.teachers
        requests = wait_for(lambda: [r for t in teachers for r in events(settings, settings.topics.generation_requests(t),
                                                                          GenerationRequested)],
                            lambda r: len(r) == len(teachers))
        assert {r.teacher_id for r in requests} == set(teachers)
        assert all(r.task.task_id == ok.task_id and r.expected_candidates == len(teachers) for r in requests)
        dlq = wait_for(lambda: events(settings, settings.topics.dlq, EventDeadLettered), lambda d: len(d) == 3)
        reasons = sorted(d.error.split(":")[0] for d in dlq)
        assert reasons == ["invalid", "oversized", "unknown_unit"]
        assert all(d.service == "router" and d.source_topic == settings.topics.tasks for d in dlq)
        assert stack.pid_alive(router.pid), "bad input must not stop the service"
    finally:
        stop(router)


def _verdict(task, text, pool, judge_version="rules-test"):
    jc = JudgedCandidate(candidate_id=f"cand_{task.task_id}", teacher_id="qwen-coder", text=text, pool=pool, rank=1,
                         score=1.0, reasons=["rules_passed"], final="12")
    return CandidatesJudged(verdict_id=f"verdict_{task.task_id}", task=task, judge_version=judge_version,
                            candidates=[jc], produced_by="test", trace=Trace(task_id=task.task_id))


def test_editor_restart_does_not_readmit_samples(tmp_path, settings):
    math = [new_task("math_steps", f"What is {i} * 4?", reference={"answer": str(i * 4)}) for i in range(3, 8)]
    verdicts = [_verdict(t, f"{t.prompt[8:-1]} = {t.reference.answer}\n#### {t.reference.answer}", "train") for t in math]
    payloads = [(settings.topics.verdicts, v.task.task_id, v.model_dump_json().encode()) for v in verdicts]
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    asyncio.run(produce_all(settings, payloads))
    editor = run_service("editor", settings, tmp_path)
    samples = wait_for(lambda: events(settings, settings.topics.samples, SampleCurated), lambda s: len(s) == 10)
    assert {s.pathway for s in samples} == {"answer", "process"}
    stop(editor)
    # the same verdicts again (a redelivery or a replayed producer), read by a restarted editor
    asyncio.run(produce_all(settings, payloads))
    editor = run_service("editor", settings, tmp_path, DISTILLERY_CONSUMER_GROUP="editor-second-life")
    try:
        time.sleep(4)
        samples = events(settings, settings.topics.samples, SampleCurated)
        assert len(samples) == 10 and len({s.sample_id for s in samples}) == 10
    finally:
        stop(editor)


@pytest.mark.parametrize("env, field", [({"DISTILLERY_HTTP_PORT": "not-a-port"}, "http_port"),
                                        ({"DISTILLERY_SPEC_PATH": "/nonexistent/spec.yaml"}, "spec")])
def test_invalid_config_stops_a_service_with_one_line_naming_the_field(tmp_path, settings, env, field):
    base = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, SPEC, tmp_path)
    result = subprocess.run([sys.executable, "-m", "distillery_router"], env={**base, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in result.stderr


def test_invalid_spec_names_the_unit_and_field(tmp_path, settings):
    bad = json.loads(json.dumps(__import__("yaml").safe_load(SPEC.read_text())))
    bad["units"]["tool_call"]["rules"]["max_chars"] = "lots"
    path = tmp_path / "bad.yaml"
    path.write_text(__import__("yaml").safe_dump(bad))
    base = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, path, tmp_path)
    result = subprocess.run([sys.executable, "-m", "distillery_judge"], env=base, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unit 'tool_call': field 'rules.max_chars'" in result.stderr
