"""The teacher's handler and bootstrap in-process: real requests, a spec whose teachers replay
recorded answers (tests.support.replay_spec), no broker and no model."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from distillery.contracts import ids
from distillery.contracts.events import GenerationRequested, Task, Trace
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import load_spec, parse_spec
from distillery.domain.backends import ReplayBackend, make_backend
from distillery.runtime.wiring import In
from distillery_teacher.bootstrap import bootstrap, hooks
from distillery_teacher.handlers import TeacherDeps, TeacherSettings, batch_limits, on_generation_requested
from tests.support import correct_answer, replay_spec


def request(task: Task, teacher_id: str = "alpha") -> GenerationRequested:
    request_id = ids.request_id_for(task.task_id, teacher_id)
    return GenerationRequested(request_id=request_id, task=task, teacher_id=teacher_id, strategy="competition",
                               route_reason="test", expected_candidates=2, max_new_tokens=64,
                               produced_by="router@test", trace=Trace(task_id=task.task_id))


def item(event: GenerationRequested, offset: int) -> In[GenerationRequested]:
    return In(event, ConsumerRecord("requests", 0, offset, 0, 0, None, b"", None, 0, 0, ()))


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def replayed(tmp_path):
    """The replay spec and its math tasks (no tools: one generation per request)."""
    path, workload = replay_spec(tmp_path, per_unit=2, eval_per_unit=0)
    return path, [row for row in workload if row["unit"] == "math_steps"]


def test_each_request_gets_its_candidate_and_one_without_a_recording_fails_alone(replayed) -> None:
    path, rows = replayed
    spec = load_spec(path)
    deps = TeacherDeps(spec=spec, settings=TeacherSettings(teacher_id="alpha"), produced_by="teacher@test",
                       backend=make_backend(spec.teachers["alpha"], "alpha"))
    unrecorded = Task(task_id="task_never_recorded", unit="math_steps", prompt="What is 2 + 2?")
    requests = [request(Task.model_validate(row)) for row in rows] + [request(unrecorded)]
    errors = counted("distillery_teacher_errors_total", teacher="alpha")
    outs = asyncio.run(on_generation_requested([item(r, i) for i, r in enumerate(requests)], deps))
    assert [o.topic for o in outs] == [deps.topics.candidates] * len(requests)
    candidates = [o.event for o in outs]
    assert [c.request_id for c in candidates] == [r.request_id for r in requests]
    *answered, failed = candidates
    assert [c.text for c in answered] == [correct_answer(row) for row in rows]
    assert all(c.error is None and c.cost_usd > 0 and c.produced_by == "teacher@test" for c in answered)
    assert failed.finish_reason == "error" and failed.error.startswith("LookupError: no recording for task")
    assert counted("distillery_teacher_errors_total", teacher="alpha") == errors + 1


def test_bootstrap_names_the_teachers_topic_group_and_poll_limits_and_refuses_an_unknown_teacher(
        replayed, monkeypatch) -> None:
    path, _ = replayed
    monkeypatch.setenv("DISTILLERY_SPEC_PATH", str(path))
    monkeypatch.setenv("DISTILLERY_TEACHER_ID", "alpha")
    deps = bootstrap()
    assert deps.params == {"teacher_id": "alpha"} and isinstance(deps.backend, ReplayBackend)
    assert deps.settings.group("teacher", **deps.params) == "distillery-teacher-alpha"
    monkeypatch.setenv("DISTILLERY_CONSUMER_GROUP", "ops")  # the operator's override still wins
    assert bootstrap().settings.group("teacher", **deps.params) == "ops"
    assert batch_limits(deps) == {"max_records": deps.teacher.batch_size * 2, "max_poll_interval_ms": 1_800_000}
    lifecycle = hooks(deps, None)
    assert list(lifecycle) == ["on_startup"]  # a replay needs no preload and has no server to probe
    asyncio.run(lifecycle["on_startup"][0]())

    monkeypatch.setenv("DISTILLERY_TEACHER_ID", "nobody")
    with pytest.raises(ConfigError) as refused:
        bootstrap()
    assert str(refused.value) == ("invalid setting teacher_id (env DISTILLERY_TEACHER_ID): "
                                  "'nobody' is not a teacher of the spec")


def test_an_openai_teacher_probes_its_server_for_readiness_and_closes_on_shutdown(replayed) -> None:
    class Server:  # stands in for the OpenAI backend's connection to its model server
        def __init__(self) -> None:
            self.calls: list[str] = []

        def start_probe(self) -> None:
            self.calls.append("probe")

        def close(self) -> None:
            self.calls.append("close")

        async def is_ready(self) -> bool:
            return "probe" in self.calls

    path, _ = replayed
    data = yaml.safe_load(path.read_text())
    data["teachers"]["remote"] = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    server = Server()
    deps = TeacherDeps(spec=parse_spec(data), settings=TeacherSettings(teacher_id="remote"), backend=server)
    lifecycle = hooks(deps, None)
    assert lifecycle["ready_check"] == server.is_ready and not asyncio.run(server.is_ready())
    for hook in [*lifecycle["on_startup"], *lifecycle["on_shutdown"]]:
        asyncio.run(hook())
    assert server.calls == ["probe", "close"] and asyncio.run(server.is_ready())
