"""The editor's wiring on FastStream's in-memory TestKafkaBroker: one consumer of verdicts and reviews
(co-partitioned by unit, one group), the channel table's topics, the shared batch discipline (commit once published) and dead-lettering.
(The same service against the real broker: tests/service/test_editor_retraction.py.)"""

from __future__ import annotations

import pytest

from distillery.contracts.events import EventDeadLettered, SampleCurated
from distillery.contracts.settings import ServiceSettings
from distillery_editor.handlers import SUBSCRIPTIONS, EditorDeps
from tests.support import InMemoryService
from tests.unit.test_editor_handlers import EGGS, SPEC, math_task, verdict


@pytest.mark.asyncio
async def test_a_verdict_becomes_samples_and_unknown_units_or_garbage_reach_the_dlq() -> None:
    settings = ServiceSettings(topic_prefix="wired")
    deps = EditorDeps(spec=SPEC, settings=settings)  # no embeddings: no model (clusters are off)
    service = InMemoryService("editor", SUBSCRIPTIONS, deps, settings)
    assert service.groups == ["distillery-editor"]  # verdicts and reviews, read by one consumer
    topics = service.bus.topics
    service.catch(topics.samples, topics.dlq)
    async with service:
        await service.publish(topics.verdicts, verdict(EGGS, "9"))
        await service.publish(topics.verdicts, verdict(math_task("Write a haiku.", "x", unit="poetry"), "x"))
        await service.client.publish(b'{"not": "a decision"}', topics.reviews, key=b"k")
    samples = service.sent(topics.samples, SampleCurated)
    assert samples and {s.provenance.task_id for s in samples} == {EGGS.task_id}
    assert all(s.produced_by == "editor@test" and s.provenance.source.topic == topics.verdicts for s in samples)
    assert deps.state.pending == 0 and {s.sample_id for s in deps.state.live_samples(EGGS.task_id)} == {
        s.sample_id for s in samples}  # committed once the batch was published
    dead = service.sent(topics.dlq, EventDeadLettered)
    assert sorted((d.source_topic, d.error.split(":")[0]) for d in dead) == sorted(
        [(topics.verdicts, "unknown_unit"), (topics.reviews, "invalid")])
