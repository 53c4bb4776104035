"""Building the trainer's deps from its settings and spec (a student base that cannot load stops it here)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec
from distillery.domain.students import check_student_bases
from distillery.runtime.bus import Bus
from distillery_trainer.handlers import TrainerDeps, TrainerSettings, rounds_due

log = logging.getLogger(__name__)


def bootstrap() -> TrainerDeps:
    settings = load_settings(TrainerSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    return TrainerDeps(spec=spec, settings=settings)


async def schedule_rounds(deps: TrainerDeps, bus: Bus) -> None:
    """Every ``round_check_s``: publish the rounds that are due (docs/trainer.md "Rounds")."""
    while True:
        await asyncio.sleep(deps.settings.round_check_s)
        try:
            outs = await rounds_due(deps)
            if outs:
                await bus.publish(outs)
                for out in outs:
                    log.info("round requested: %s (%s)", out.event.student, out.event.reason)
        except Exception as exc:  # noqa: BLE001 - broker trouble: the state is re-read next tick
            log.warning("round scheduler: %s: %s", type(exc).__name__, exc)


def hooks(deps: TrainerDeps, bus: Bus) -> dict[str, Any]:
    """The round scheduler, where the spec gives a student a round policy."""
    if not any(not policy.manual for policy in deps.spec.rounds.values()):
        return {}
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(schedule_rounds(deps, bus)))

    async def stop() -> None:
        for task in tasks:
            task.cancel()

    return {"on_startup": [start], "on_shutdown": [stop]}
