"""The router's wiring on FastStream's in-memory TestKafkaBroker: its subscriptions, the channel
table's topics and groups, the runtime's validation and dead-lettering. (The same wiring against
the real broker: tests/service/test_router_routing.py.)"""

from __future__ import annotations

import pytest

from distillery.contracts.events import EventDeadLettered, GenerationRequested, TaskSubmitted, Trace, new_task
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
