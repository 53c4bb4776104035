"""The trainer's wiring on FastStream's in-memory TestKafkaBroker: a training request on its topic
becomes StudentTrained on the students topic; garbage and unknown students reach the DLQ. The
snapshot reader and the training run are the fakes of test_trainer_handlers (no model, no cluster)."""

from __future__ import annotations

import pytest

from distillery.contracts.events import EventDeadLettered, StudentTrained
from distillery_trainer.handlers import SUBSCRIPTIONS, TrainerDeps, TrainerSettings
from tests.support import InMemoryService
from tests.unit.test_trainer_handlers import SPEC, Runs, Topics, request, sample


@pytest.mark.asyncio
async def test_a_request_on_its_topic_announces_a_student_and_bad_requests_reach_the_dlq(tmp_path) -> None:
    settings = TrainerSettings(topic_prefix="wired", artifact_dir=tmp_path)
    topics = Topics({settings.topics.samples: [sample(0), sample(1)]})
    deps = TrainerDeps(spec=SPEC, settings=settings, read=topics.read, run=Runs())
    service = InMemoryService("trainer", SUBSCRIPTIONS, deps, settings)
    assert service.groups == ["distillery-trainer"]
    service.catch(settings.topics.students, settings.topics.dlq)
    async with service:
        await service.publish(settings.topics.training_requests, request())
        await service.publish(settings.topics.training_requests, request("astrologer"))
        await service.client.publish(b'{"not": "a request"}', settings.topics.training_requests, key=b"k")
    (trained,) = service.sent(settings.topics.students, StudentTrained)
    assert trained.student == "tiny" and trained.manifest["samples"] == 2 and trained.produced_by == "trainer@test"
    dead = service.sent(settings.topics.dlq, EventDeadLettered)
    assert sorted(d.error.split(":")[0] for d in dead) == ["invalid", "unknown_student"]
    assert {d.source_topic for d in dead} == {settings.topics.training_requests}
