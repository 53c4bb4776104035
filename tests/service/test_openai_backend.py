"""The ``openai`` teacher backend against a real OpenAI-compatible server process.

The server is ``python -m distillery_teacher.openai_server`` serving SmolLM2 on loopback: real
generation, real HTTP, the official ``openai`` client. Then the teacher service end to end on the
real broker, and its readiness while the server is down and after it comes up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, GenerationRequested, Trace, new_task
from distillery.contracts.spec import TeacherSpec, load_spec
from distillery.domain.models import SMOLLM2
from distillery.domain.openai_backend import OpenAIBackend
from distillery.runtime.kafka import produce_all
from distillery.runtime.service import free_port
from distillery_cli import stack
from distillery_teacher.logic import answer
from tests.support import ROOT
from tests.waiting import events, wait_for

PRICE = {"per_1k_prompt": 0.003, "per_1k_completion": 0.015}


def start_server(tmp: Path, port: int, *extra: str) -> subprocess.Popen:
    log = tmp / f"openai_server_{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "distillery_teacher.openai_server", "--model", SMOLLM2,
                                 "--port", str(port), *extra], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while not _get(port, "/v1/models"):
        assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)
    return proc


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp("server"), port)
    yield port
    stop_server(proc)


def teacher(port: int, **fields) -> TeacherSpec:
    return TeacherSpec.model_validate({"backend": "openai", "model": SMOLLM2, "base_url": f"http://127.0.0.1:{port}/v1",
                                       "timeout_s": 60, "concurrency": 4, "price": PRICE, **fields})


PROMPTS = [("t1", "", "What is 2 + 2? Answer with the number."),
           ("t2", "Reply in one short sentence.", "Name a primary color."),
           ("t3", "", "Write a long story about a dragon.")]


def test_real_completions_carry_tokens_confidence_and_finish_reason(server):
    backend = OpenAIBackend(teacher(server, json_output=True), "remote")
    try:
        gens = backend.generate(PROMPTS, 12)
    finally:
        backend.close()
    assert len(gens) == 3
    for gen in gens:
        assert gen.error is None and gen.text.strip()
        assert gen.prompt_tokens > 5 and 1 <= gen.completion_tokens <= 12
        assert 0 < gen.mean_token_prob <= 1
        assert gen.finish_reason in ("stop", "length") and gen.seconds > 0
    assert gens[2].finish_reason == "length" and gens[2].completion_tokens == 12  # a long story does not fit
    stats = _get(server, "/stats")
    assert stats["response_formats"]["json_object"] >= 3  # json_output asks for response_format


def test_stop_sequences_reach_the_server(server):
    backend = OpenAIBackend(teacher(server, stop=[" "]), "remote")
    try:
        (gen,) = backend.generate(PROMPTS[2:], 12)
    finally:
        backend.close()
    assert gen.error is None and gen.text and " " not in gen.text.strip()
    assert gen.finish_reason == "stop" and gen.completion_tokens < 12


def test_a_500_is_retried_by_the_client(tmp_path):
    port = free_port()
    proc = start_server(tmp_path, port, "--fail-first", "1")
    backend = OpenAIBackend(teacher(port, max_retries=2), "remote")
    try:
        (gen,) = backend.generate(PROMPTS[:1], 6)
        stats = _get(port, "/stats")
    finally:
        backend.close()
        stop_server(proc)
    assert gen.error is None and gen.completion_tokens >= 1
    assert stats["chat_requests"] == 2 and stats["injected_failures"] == 1 and stats["completed"] == 1


def test_a_client_error_is_not_retried_and_fails_only_its_request(server):
    before = _get(server, "/stats")
    backend = OpenAIBackend(teacher(server, model="no-such-model", max_retries=3), "remote")
    try:
        (gen,) = backend.generate(PROMPTS[:1], 4)
    finally:
        backend.close()
    after = _get(server, "/stats")
    assert gen.error.startswith(f"openai backend: HTTP 404 from http://127.0.0.1:{server}/v1/chat/completions")
    assert "no-such-model" in gen.error and gen.text == "" and gen.mean_token_prob is None
    assert after["chat_requests"] - before["chat_requests"] == 1 and after["completed"] == before["completed"]


def test_unreachable_server_gives_failed_candidates_with_the_reason():
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    dead = teacher(free_port(), timeout_s=1, max_retries=1)
    backend = OpenAIBackend(dead, "remote")
    tasks = [new_task("math_steps", f"What is {i} * 3?", reference={"answer": str(3 * i)}) for i in (2, 5)]
    requests = [_request(t, "remote") for t in tasks]
    started = time.monotonic()
    try:
        candidates = answer(requests, backend, spec, dead, "teacher@test")
    finally:
        backend.close()
    assert time.monotonic() - started < 15
    assert [c.request_id for c in candidates] == [r.request_id for r in requests]
    for cand in candidates:
        assert cand.finish_reason == "error" and cand.text == "" and cand.cost_usd == 0
        assert "APIConnectionError" in cand.error and dead.base_url in cand.error and "2 attempts" in cand.error


def _request(task, teacher_id: str, max_new_tokens: int = 12) -> GenerationRequested:
    return GenerationRequested(request_id=ids.request_id_for(task.task_id, teacher_id), task=task,
                               teacher_id=teacher_id, strategy="single", route_reason="test", expected_candidates=1,
                               max_new_tokens=max_new_tokens, produced_by="test@0", trace=Trace(task_id=task.task_id))


def _spec_with_remote_teacher(tmp_path: Path, port: int) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    spec["teachers"] = {"remote": {"backend": "openai", "model": SMOLLM2, "base_url": f"http://127.0.0.1:{port}/v1",
                                   "max_new_tokens": 12, "batch_size": 4, "concurrency": 4, "timeout_s": 60,
                                   "price": PRICE}}
    for unit in spec["units"].values():
        unit["routing"] = {"strategy": "single", "teachers": ["remote"], "max_new_tokens": 12}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _start_teacher(settings, tmp_path: Path, spec_path: Path) -> stack.ProcessInfo:
    env = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, spec_path, tmp_path,
                            {"DISTILLERY_TEACHER_ID": "remote"})
    return stack.start_process("teacher-remote", "distillery_teacher", env, tmp_path)


def _live(info: stack.ProcessInfo) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{info.port}/health/live", timeout=2) as resp:
            return resp.status < 300
    except OSError:
        return False


def _readiness(info: stack.ProcessInfo) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{info.port}/health/ready", timeout=6) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _stop(info: stack.ProcessInfo) -> None:
    stack._signal(info.pid, 15)
    stack._wait_gone([info.pid], 10)


def test_teacher_service_answers_through_the_server(server, tmp_path, settings):
    info = _start_teacher(settings, tmp_path, _spec_with_remote_teacher(tmp_path, server))
    try:
        wait_for(lambda: stack.ready(info) or not stack.pid_alive(info.pid), bool, timeout_s=60)
        assert stack.pid_alive(info.pid), stack.last_line(info.log)
        before = _get(server, "/stats")["completed"]
        tasks = [new_task("tool_boundary", "What is the weather in Paris today?"),
                 new_task("math_steps", "Tom has 3 apples and buys 4 more. How many apples does he have?",
                          reference={"answer": "7"}),
                 new_task("math_steps", "A box holds 6 eggs. How many eggs are in 2 boxes?",
                          reference={"answer": "12"})]
        topic = settings.topics.generation_requests("remote")
        items = [(topic, t.task_id, _request(t, "remote").model_dump_json().encode()) for t in tasks]
        asyncio.run(produce_all(settings, items))
        cands = wait_for(lambda: events(settings, settings.topics.candidates, CandidateGenerated),
                         lambda c: len(c) >= 3, timeout_s=60)
    finally:
        _stop(info)
    assert sorted(c.task.task_id for c in cands) == sorted(t.task_id for t in tasks)
    for cand in cands:
        assert cand.error is None and cand.text and cand.teacher_id == "remote"
        assert cand.usage.prompt_tokens > 10 and 1 <= cand.usage.completion_tokens <= 12
        assert cand.cost_usd == pytest.approx((cand.usage.prompt_tokens * 0.003 + cand.usage.completion_tokens * 0.015)
                                              / 1000)
        assert 0 < cand.confidence <= 1 and cand.finish_reason in ("stop", "length") and cand.latency_s > 0
    assert _get(server, "/stats")["completed"] - before == 3


def test_teacher_is_not_ready_while_its_server_is_down(tmp_path, settings):
    port = free_port()
    info = _start_teacher(settings, tmp_path, _spec_with_remote_teacher(tmp_path, port))
    proc = None
    try:
        wait_for(lambda: _live(info) or not stack.pid_alive(info.pid), bool, timeout_s=60)
        assert stack.pid_alive(info.pid), stack.last_line(info.log)
        for _ in range(3):  # the broker answers; the model server does not
            assert _readiness(info) == (503, b"backend not ready")
            time.sleep(0.5)
        proc = start_server(tmp_path, port)
        wait_for(lambda: stack.ready(info) or not stack.pid_alive(info.pid), bool, timeout_s=30)
        assert stack.pid_alive(info.pid) and stack.ready(info)
    finally:
        _stop(info)
        if proc is not None:
            stop_server(proc)
    assert "not reachable" in Path(info.log).read_text()
