"""The router's wiring on FastStream's in-memory TestKafkaBroker: its subscriptions, the channel
table's topics and groups, the runtime's validation and dead-lettering. (The same wiring against
the real broker: tests/service/test_router_routing.py.)"""

from __future__ import annotations

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from distillery.contracts.events import (
    EventDeadLettered,
    GenerationRequested,
    TaskSubmitted,
    Trace,
    new_task,
    parse_event,
)
from distillery.contracts.spec import load_spec
from distillery.runtime.service import make_bus
from distillery.runtime.wiring import wire
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


@pytest.mark.asyncio
async def test_a_bare_task_object_is_wrapped_validated_and_routed_like_a_submitted_line() -> None:
    import json

    from distillery.contracts import ids
    from distillery_router import handlers

    settings = RouterSettings(topic_prefix="front")
    deps = RouterDeps(spec=SPEC, settings=settings)
    bus = make_bus(settings, "router_front_door", "test")  # its own metric names: one bus per service name
    wire(bus, "router", handlers.SUBSCRIPTIONS, deps)
    deps.topics, deps.produced_by = bus.topics, bus.produced_by
    bus.in_memory = True
    got: dict[str, list[bytes]] = {}

    def catcher(topic):
        async def catch(msg: KafkaMessage) -> None:
            got.setdefault(topic, []).append(msg.body)
        return catch

    teachers = sorted(SPEC.teachers)
    for topic in [bus.topics.generation_requests(t) for t in teachers] + [bus.topics.dlq]:
        bus.broker.subscriber(topic, group_id=f"catch-{topic}")(catcher(topic))
    bare = {"unit": "math_steps", "prompt": "What is 9 * 8?"}
    async with TestKafkaBroker(bus.broker) as client:
        await client.publish(json.dumps(bare).encode(), bus.topics.tasks)
        await client.publish(json.dumps({"unit": "nope", "prompt": "?"}).encode(), bus.topics.tasks)
    requests = [parse_event(GenerationRequested, body) for t in teachers
                for body in got.get(bus.topics.generation_requests(t), [])]
    assert {r.task.task_id for r in requests} == {ids.task_id_for("math_steps", bare["prompt"], [])}
    assert all(r.task.prompt == bare["prompt"] for r in requests)
    (dead,) = [parse_event(EventDeadLettered, body) for body in got[bus.topics.dlq]]
    assert "unknown capability unit 'nope'" in dead.error


@pytest.mark.asyncio
async def test_a_newer_producers_extra_fields_are_ignored_and_a_newer_schema_version_is_dead_lettered() -> None:
    import json

    settings = RouterSettings(topic_prefix="skew")
    deps = RouterDeps(spec=SPEC, settings=settings)
    bus = make_bus(settings, "router_version_skew", "test")
    wire(bus, "router", SUBSCRIPTIONS, deps)
    deps.topics, deps.produced_by = bus.topics, bus.produced_by
    bus.in_memory = True
    got: dict[str, list[bytes]] = {}

    def catcher(topic):
        async def catch(msg: KafkaMessage) -> None:
            got.setdefault(topic, []).append(msg.body)
        return catch

    teachers = sorted(SPEC.teachers)
    for topic in [bus.topics.generation_requests(t) for t in teachers] + [bus.topics.dlq]:
        bus.broker.subscriber(topic, group_id=f"catch-{topic}")(catcher(topic))
    unit = next(iter(SPEC.units))
    task = new_task(unit, "What is 5 * 5?")
    event = json.loads(TaskSubmitted(task_id=task.task_id, task=task, produced_by="newer",
                                     trace=Trace(task_id=task.task_id)).model_dump_json())
    newer_fields = {**event, "priority": "high", "task": {**event["task"], "locale": "fr"}}
    async with TestKafkaBroker(bus.broker) as client:
        await client.publish(json.dumps(newer_fields).encode(), bus.topics.tasks)
        await client.publish(json.dumps({**event, "schema_version": 2}).encode(), bus.topics.tasks)
    requests = [parse_event(GenerationRequested, body) for t in teachers
                for body in got.get(bus.topics.generation_requests(t), [])]
    assert requests and {r.task.task_id for r in requests} == {task.task_id}
    assert all(b"locale" not in body for t in teachers for body in got.get(bus.topics.generation_requests(t), []))
    (dead,) = [parse_event(EventDeadLettered, body) for body in got[bus.topics.dlq]]
    assert dead.error == ("newer_schema: TaskSubmitted schema_version 2 is newer than this reader's 1: "
                          "replay it after upgrading")
