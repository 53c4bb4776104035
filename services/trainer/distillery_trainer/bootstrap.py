"""Building the trainer's deps from its settings and spec (a student base that cannot load stops it here)."""

from __future__ import annotations

from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec
from distillery.domain.students import check_student_bases
from distillery_trainer.handlers import TrainerDeps, TrainerSettings


def bootstrap() -> TrainerDeps:
    settings = load_settings(TrainerSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    return TrainerDeps(spec=spec, settings=settings)
