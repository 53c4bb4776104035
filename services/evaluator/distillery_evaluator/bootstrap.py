"""The evaluator's deps: settings, spec, how it reads a topic and how it runs a student."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import load_spec
from distillery.domain.students import check_student_bases
from distillery.runtime.kafka import replay
from distillery.runtime.wiring import Context
from distillery_evaluator import report, students

Read = Callable[[str, type], Awaitable[list[Any]]]  # (topic, event model) -> the topic's events, in order


class EvaluatorSettings(ServiceSettings):
    device: str = "cpu"


@dataclass(kw_only=True)
class EvaluatorDeps(Context):
    settings: EvaluatorSettings = field(default_factory=EvaluatorSettings)
    read: Read | None = None  # None: replay from the settings' broker
    # (trained, recipe, spec, tasks, device, include_before) -> the student's outputs on the held-out tasks
    student_outputs: Callable[..., list[Any]] = students.student_outputs
    # (report data, folder) -> the written files by name; its plots are most of an evaluation without a model
    write_report: Callable[[report.ReportData, Path], dict[str, Path]] = report.write_report

    def __post_init__(self) -> None:
        if self.read is None:
            self.read = topic_reader(self.settings)


def topic_reader(settings: ServiceSettings) -> Read:
    async def read(topic: str, model: type) -> list[Any]:
        return (await replay(settings, topic, model)).events

    return read


def bootstrap() -> EvaluatorDeps:
    settings = load_settings(EvaluatorSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    return EvaluatorDeps(spec=spec, settings=settings)
