"""The evaluator's wiring on FastStream's in-memory TestKafkaBroker: StudentTrained on the students
topic becomes EvaluationCompleted on the evaluations topic; garbage reaches the DLQ. Topics, the
student's answers and the report's rendering are the fakes of test_evaluator_handlers."""

from __future__ import annotations

import pytest

from distillery.contracts.events import EvaluationCompleted, EventDeadLettered
from distillery_evaluator.handlers import SUBSCRIPTIONS, EvaluatorDeps, EvaluatorSettings
from tests.support import InMemoryService
from tests.unit.test_evaluator_handlers import SPEC, Reader, Reports, Student, topics_with, trained


@pytest.mark.asyncio
async def test_a_trained_student_on_its_topic_is_evaluated_and_garbage_reaches_the_dlq(tmp_path) -> None:
    settings = EvaluatorSettings(topic_prefix="unit")  # the prefix of the fake topics
    reports = Reports()
    deps = EvaluatorDeps(spec=SPEC, settings=settings, read=Reader(topics_with()).read, student_outputs=Student(),
                         write_report=reports)
    service = InMemoryService("evaluator", SUBSCRIPTIONS, deps, settings)
    assert service.groups == ["distillery-evaluator"]
    service.catch(settings.topics.evaluations, settings.topics.dlq)
    async with service:
        await service.publish(settings.topics.students, trained(tmp_path))
        await service.publish(settings.topics.students, trained(tmp_path, student="astrologer"))  # not this spec's
        await service.client.publish(b'{"not": "a student"}', settings.topics.students, key=b"k")
    (evaluation,) = service.sent(settings.topics.evaluations, EvaluationCompleted)
    assert evaluation.student_id == "student_now" and evaluation.produced_by == "evaluator@test"
    assert {s.subject for s in evaluation.scores} == {"teacher:qwen-coder", "student:before", "student:after"}
    ((report_dir, _, _),) = reports.written
    assert evaluation.report_path == str(report_dir / "report.html")
    (dead,) = service.sent(settings.topics.dlq, EventDeadLettered)
    assert dead.source_topic == settings.topics.students and dead.error.startswith("invalid:")
