"""The router's wiring on FastStream's in-memory TestKafkaBroker: its subscriptions, the channel
table's topics and groups, the runtime's validation and dead-lettering. (The same wiring against
the real broker: tests/service/test_router_routing.py.)"""

from __future__ import annotations

import json

import pytest

from distillery.contracts import ids
from distillery.contracts.events import (
    EventDeadLettered,
    GenerationRequested,
    TaskSubmitted,
    Trace,
    new_task,
)
from distillery.contracts.spec import load_spec
from distillery_router.handlers import SUBSCRIPTIONS, RouterDeps
from distillery_router.ingest import RouterSettings
from tests.support import ROOT, InMemoryService

SPEC = load_spec(ROOT / "examples" / "spec.yaml")


@pytest.mark.asyncio
async def test_a_task_on_the_tasks_topic_reaches_each_teachers_topic_and_garbage_reaches_the_dlq() -> None:
    settings = RouterSettings(topic_prefix="wired")
    service = InMemoryService("router", SUBSCRIPTIONS, RouterDeps(spec=SPEC, settings=settings), settings)
    assert service.groups[0] == "distillery-router"
    teachers = sorted(SPEC.teachers)
    service.catch(*(service.bus.topics.generation_requests(t) for t in teachers), service.bus.topics.dlq)
    unit = next(iter(SPEC.units))
    task = new_task(unit, "What is 6 * 7?")
    async with service:
        await service.publish(service.bus.topics.tasks, TaskSubmitted(
            task_id=task.task_id, task=task, produced_by="test", trace=Trace(task_id=task.task_id)))
        await service.client.publish(b'{"not": "a task"}', service.bus.topics.tasks, key=b"k")
    requests = [r for t in teachers for r in service.sent(service.bus.topics.generation_requests(t), GenerationRequested)]
    assert requests and {r.task.task_id for r in requests} == {task.task_id}
    assert all(r.produced_by == "router@test" for r in requests)
    (dead,) = service.sent(service.bus.topics.dlq, EventDeadLettered)
    assert dead.source_topic == service.bus.topics.tasks and dead.error.startswith("invalid:")


def in_memory_router(prefix: str, metrics_name: str) -> InMemoryService:
    """The router's subscriptions on the in-memory broker, catching the teachers' topics and the DLQ."""
    settings = RouterSettings(topic_prefix=prefix)
    service = InMemoryService("router", SUBSCRIPTIONS, RouterDeps(spec=SPEC, settings=settings), settings, metrics_name)
    service.catch(*(service.bus.topics.generation_requests(t) for t in SPEC.teachers), service.bus.topics.dlq)
    return service


def routed(service: InMemoryService) -> list[GenerationRequested]:
    return [r for t in SPEC.teachers for r in service.sent(service.bus.topics.generation_requests(t), GenerationRequested)]


@pytest.mark.asyncio
async def test_a_bare_task_object_is_wrapped_validated_and_routed_like_a_submitted_line() -> None:
    service = in_memory_router("front", "router_front_door")
    bare = {"unit": "math_steps", "prompt": "What is 9 * 8?"}
    async with service:
        await service.client.publish(json.dumps(bare).encode(), service.bus.topics.tasks)
        await service.client.publish(json.dumps({"unit": "nope", "prompt": "?"}).encode(), service.bus.topics.tasks)
        await service.client.publish(b"[" * 200_000 + b"]" * 200_000, service.bus.topics.tasks)
    requests = routed(service)
    assert {r.task.task_id for r in requests} == {ids.task_id_for("math_steps", bare["prompt"], [])}
    assert all(r.task.prompt == bare["prompt"] for r in requests)
    unknown, deep = service.sent(service.bus.topics.dlq, EventDeadLettered)
    assert "unknown capability unit 'nope'" in unknown.error
    assert deep.error == "invalid: ValueError: JSON nested too deeply"


@pytest.mark.asyncio
async def test_a_newer_producers_extra_fields_are_ignored_and_a_newer_schema_version_is_dead_lettered() -> None:
    service = in_memory_router("skew", "router_version_skew")
    task = new_task(next(iter(SPEC.units)), "What is 5 * 5?")
    event = json.loads(TaskSubmitted(task_id=task.task_id, task=task, produced_by="newer",
                                     trace=Trace(task_id=task.task_id)).model_dump_json())
    newer_fields = {**event, "priority": "high", "task": {**event["task"], "locale": "fr"}}
    async with service:
        await service.client.publish(json.dumps(newer_fields).encode(), service.bus.topics.tasks)
        await service.client.publish(json.dumps({**event, "schema_version": 2}).encode(), service.bus.topics.tasks)
    requests = routed(service)
    assert requests and {r.task.task_id for r in requests} == {task.task_id}
    bodies = [b for t in SPEC.teachers for b in service.received.get(service.bus.topics.generation_requests(t), [])]
    assert bodies and all(b"locale" not in body and b"priority" not in body for body in bodies)
    (dead,) = service.sent(service.bus.topics.dlq, EventDeadLettered)
    assert dead.error == ("newer_schema: TaskSubmitted schema_version 2 is newer than this reader's 1: "
                          "replay it after upgrading")
