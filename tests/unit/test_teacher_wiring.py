"""The teacher's wiring on FastStream's in-memory TestKafkaBroker: its own request topic and group
from the channel table, candidates out, invalid requests to the DLQ. A replay teacher: no model.
(The teacher against the real broker: tests/service/test_services_alone.py.)"""

from __future__ import annotations

import pytest

from distillery.contracts.events import CandidateGenerated, EventDeadLettered, Task
from distillery.contracts.spec import load_spec
from distillery.domain.backends import make_backend
from distillery_teacher.handlers import SUBSCRIPTIONS, TeacherDeps, TeacherSettings
from tests.support import InMemoryService, flawed_answer, replay_spec
from tests.unit.test_teacher_handlers import request


@pytest.mark.asyncio
async def test_a_request_on_the_teachers_topic_becomes_a_candidate_and_garbage_reaches_the_dlq(tmp_path) -> None:
    path, workload = replay_spec(tmp_path, per_unit=1, eval_per_unit=0)
    spec = load_spec(path)
    settings = TeacherSettings(teacher_id="beta", topic_prefix="wired")
    deps = TeacherDeps(spec=spec, settings=settings, backend=make_backend(spec.teachers["beta"], "beta"))
    service = InMemoryService("teacher", SUBSCRIPTIONS, deps, settings)  # one per process: the bus's metrics
    assert service.groups == ["distillery-teacher-beta"]
    topics = service.bus.topics
    service.catch(topics.candidates, topics.dlq)
    row = next(r for r in workload if r["unit"] == "math_steps")
    async with service:
        await service.publish(topics.generation_requests("beta"), request(Task.model_validate(row), "beta"))
        await service.client.publish(b'{"not": "a request"}', topics.generation_requests("beta"), key=b"k")
    (candidate,) = service.sent(topics.candidates, CandidateGenerated)
    assert (candidate.teacher_id, candidate.task.task_id, candidate.produced_by) == ("beta", row["task_id"], "teacher@test")
    assert candidate.text == flawed_answer(row, workload.index(row)) and candidate.error is None  # beta's recording
    (dead,) = service.sent(topics.dlq, EventDeadLettered)
    assert dead.source_topic == topics.generation_requests("beta") and dead.error.startswith("invalid:")
