"""The teacher's deps (its settings, spec entry and backend) and its start/stop hooks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from distillery.contracts.settings import ConfigError, ServiceSettings, load_settings
from distillery.contracts.spec import TeacherSpec, load_spec
from distillery.domain.backends import Backend, TransformersBackend, make_backend
from distillery.runtime.bus import Bus
from distillery.runtime.wiring import Context


class TeacherSettings(ServiceSettings):
    teacher_id: str = Field(min_length=1)
    device: str = "cpu"
    preload: bool = True


@dataclass(kw_only=True)
class TeacherDeps(Context):
    settings: TeacherSettings
    backend: Backend

    def __post_init__(self) -> None:
        # A teacher consumes only its own request topic, in its own group, so each teacher scales by its own lag.
        self.params = {**self.params, "teacher_id": self.settings.teacher_id}

    @property
    def teacher_id(self) -> str:
        return self.settings.teacher_id

    @property
    def teacher(self) -> TeacherSpec:
        return self.spec.teachers[self.teacher_id]


def bootstrap() -> TeacherDeps:
    settings = load_settings(TeacherSettings)
    spec = load_spec(settings.spec_path)
    teacher = spec.teachers.get(settings.teacher_id)
    if teacher is None:
        raise ConfigError(f"invalid setting teacher_id (env DISTILLERY_TEACHER_ID): '{settings.teacher_id}' is not a teacher of the spec")
    backend = make_backend(teacher, settings.teacher_id, settings.device)
    return TeacherDeps(spec=spec, settings=settings, backend=backend)


def hooks(deps: TeacherDeps, bus: Bus) -> dict[str, Any]:  # noqa: ARG001 - the teacher's hooks need no bus
    backend: Any = deps.backend
    if deps.teacher.backend == "openai":
        # The service starts even when the model server is down; readiness follows the server.
        async def start_probe() -> None:
            backend.start_probe()

        async def close_backend() -> None:
            backend.close()

        return {"on_startup": [start_probe], "on_shutdown": [close_backend], "ready_check": backend.is_ready}

    async def preload() -> None:
        if deps.settings.preload and isinstance(backend, TransformersBackend):
            await asyncio.to_thread(backend.load)

    return {"on_startup": [preload]}
