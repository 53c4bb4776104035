"""The trainer's deps: settings, spec, how it reads a snapshot of a topic and how it trains."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import load_spec
from distillery.domain.students import check_student_bases
from distillery.runtime.kafka import Replayed, replay
from distillery.runtime.wiring import Context
from distillery_trainer import training

# (topic, event model or parse function, partition -> end offset or None) -> the topic read to there
Read = Callable[[str, Any, dict[int, int] | None], Awaitable[Replayed]]


class TrainerSettings(ServiceSettings):
    artifact_dir: Path = Path(".distillery/artifacts")
    device: str = "cpu"


@dataclass(kw_only=True)
class TrainerDeps(Context):
    settings: TrainerSettings = field(default_factory=TrainerSettings)
    read: Read | None = None  # None: replay from the settings' broker
    run: Callable[..., dict[str, Any]] = training.run  # one training run -> its lineage record

    def __post_init__(self) -> None:
        if self.read is None:
            self.read = partial(replay, self.settings)


def bootstrap() -> TrainerDeps:
    settings = load_settings(TrainerSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    return TrainerDeps(spec=spec, settings=settings)
