"""The router's deps (spec, learned value table, task index) and its start/stop hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillery.contracts.events import CandidatesJudged
from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import replay
from distillery.runtime.wiring import Context
from distillery_router.feedback import ValueTable
from distillery_router.ingest import RouterSettings, TaskIndex, ingest_server


@dataclass(kw_only=True)
class RouterDeps(Context):
    settings: RouterSettings = field(default_factory=RouterSettings)
    table: ValueTable = field(default_factory=ValueTable)  # value routing: acceptance and cost per teacher
    index: TaskIndex = field(default_factory=TaskIndex)  # what the gRPC ingest reports as a task's status


def bootstrap() -> RouterDeps:
    settings = load_settings(RouterSettings)
    return RouterDeps(spec=load_spec(settings.spec_path), settings=settings)


def uses_strategy(strategy: str):
    def enabled(deps: RouterDeps) -> bool:
        return any(unit.routing.strategy == strategy for unit in deps.spec.units.values())

    return enabled


def retries_enabled(deps: RouterDeps) -> bool:
    return any(unit.max_attempts > 1 for unit in deps.spec.units.values())


def hooks(deps: RouterDeps, bus: Bus) -> dict[str, Any]:
    """The gRPC ingest (when DISTILLERY_GRPC_PORT is set) and, for value routing, the table rebuilt
    from the verdicts topic so a restart keeps what was learned."""
    from distillery_router.handlers import on_candidates_judged

    async def rebuild_value_table() -> None:
        for verdict in (await replay(deps.settings, deps.topics.verdicts, CandidatesJudged)).events:
            on_candidates_judged(verdict, deps)

    ingest = ingest_server(deps.settings, deps.spec, bus, deps.index)
    startup = [rebuild_value_table] if uses_strategy("value")(deps) else []
    return {"on_startup": [*startup, *([ingest.start] if ingest else [])],
            "on_shutdown": [ingest.stop] if ingest else []}
