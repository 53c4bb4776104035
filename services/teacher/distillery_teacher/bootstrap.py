"""Building the teacher's deps (its spec entry and backend) from settings and spec, and its start/stop hooks."""

from __future__ import annotations

import asyncio
from typing import Any

from distillery.contracts.settings import ConfigError, load_settings
from distillery.contracts.spec import load_spec
from distillery.domain.backends import TransformersBackend, make_backend
from distillery.runtime.bus import Bus
from distillery_teacher.handlers import TeacherDeps, TeacherSettings
from distillery_teacher.student import ServedStudent


def bootstrap() -> TeacherDeps:
    settings = load_settings(TeacherSettings)
    spec = load_spec(settings.spec_path)
    teacher = spec.teachers.get(settings.teacher_id)
    if teacher is None:
        raise ConfigError(f"invalid setting teacher_id (env DISTILLERY_TEACHER_ID): '{settings.teacher_id}' is not a teacher of the spec")
    if teacher.backend == "student":
        backend = ServedStudent(spec, teacher.student, settings.device)
    else:
        backend = make_backend(teacher, settings.teacher_id, settings.device)
    return TeacherDeps(spec=spec, settings=settings, backend=backend)


def hooks(deps: TeacherDeps, bus: Bus) -> dict[str, Any]:
    backend: Any = deps.backend
    if deps.teacher.backend == "openai":
        # The service starts even when the model server is down; readiness follows the server.
        async def start_probe() -> None:
            backend.start_probe()

        async def close_backend() -> None:
            backend.close()

        return {"on_startup": [start_probe], "on_shutdown": [close_backend], "ready_check": backend.is_ready}
    if deps.teacher.backend == "student":  # not ready while its promoted artifact's files are missing
        return {"ready_check": backend.is_ready}

    async def preload() -> None:
        if deps.settings.preload and isinstance(backend, TransformersBackend):
            await asyncio.to_thread(backend.load)

    return {"on_startup": [preload]}
