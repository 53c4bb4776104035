"""Building the router's deps from settings and spec, and its start/stop hooks."""

from __future__ import annotations

from typing import Any

from distillery.contracts.events import CandidatesJudged
from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import replay
from distillery_router.handlers import RouterDeps, on_candidates_judged, uses_strategy
from distillery_router.ingest import RouterSettings, ingest_server


def bootstrap() -> RouterDeps:
    settings = load_settings(RouterSettings)
    return RouterDeps(spec=load_spec(settings.spec_path), settings=settings)


def hooks(deps: RouterDeps, bus: Bus) -> dict[str, Any]:
    """The gRPC ingest (when DISTILLERY_GRPC_PORT is set) and, for value routing, the table rebuilt
    from the verdicts topic so a restart keeps what was learned."""
    async def rebuild_value_table() -> None:
        replayed = await replay(deps.settings, deps.topics.verdicts, CandidatesJudged)
        for verdict in replayed.events:
            on_candidates_judged(verdict, deps)
        deps.rebuilt_to = replayed.end_offsets  # the "-feedback" follower goes on from here

    ingest = ingest_server(deps.settings, deps.spec, bus, deps.index)
    startup = [rebuild_value_table] if uses_strategy("value")(deps) else []
    return {"on_startup": [*startup, *([ingest.start] if ingest else [])],
            "on_shutdown": [ingest.stop] if ingest else []}
