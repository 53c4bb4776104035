"""Router wiring: tasks in, per-teacher generation requests out.

Chains also read candidates (to move a chain to its next step); the ``value`` strategy
also reads verdicts (to learn acceptance and cost per teacher and unit).
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

from distillery.runtime.bus import In, Out
from distillery.contracts.events import CandidateGenerated, CandidatesJudged, RegenerationRequested, TaskSubmitted, parse_event
from distillery.runtime.kafka import read_snapshot
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec
from distillery_router import __version__
from distillery_router.ingest import RouterSettings, TaskIndex, ingest_server
from distillery_router.feedback import ValueTable
from distillery_router.logic import next_chain_step, regenerate, route

# The size bound is on the task (as submit and ingest measure it); the event envelope around it
# (ids, producer, time, trace) adds a few hundred bytes that must not tip a task over the limit.
ENVELOPE_BYTES = 4096
ROUTED = Counter("distillery_router_requests_total", "Generation requests sent", ["unit", "teacher", "strategy"])
ACCEPTANCE = Gauge("distillery_router_acceptance_rate", "Judge acceptance learned per teacher and unit", ["unit", "teacher"])
COST_PER_ACCEPTED = Gauge("distillery_router_cost_per_accepted_usd", "Cost per accepted candidate", ["unit", "teacher"])
JUDGED = Gauge("distillery_router_judged_candidates", "Candidates behind the learned figures", ["unit", "teacher"])


def build():
    settings = load_settings(RouterSettings)
    spec = load_spec(settings.spec_path)
    bus = make_bus(settings, "router", __version__)
    index = TaskIndex()
    table = ValueTable()
    strategies = {unit.routing.strategy for unit in spec.units.values()}
    ingest = ingest_server(settings, spec, bus, index)  # None when DISTILLERY_GRPC_PORT is 0

    def on_task(item: In[TaskSubmitted]) -> list[Out]:
        requests = route(item.event, spec, bus.produced_by, table)
        for request in requests:
            ROUTED.labels(request.task.unit, request.teacher_id, request.strategy).inc()
        index.routed(item.event.task_id, [r.teacher_id for r in requests], unit=item.event.task.unit)
        return [Out(bus.topics.generation_requests(r.teacher_id), r) for r in requests]

    def on_chain_step(item: In[CandidateGenerated]) -> list[Out]:
        request = next_chain_step(item.event, spec, bus.produced_by)
        if request is None:
            return []
        ROUTED.labels(request.task.unit, request.teacher_id, request.strategy).inc()
        return [Out(bus.topics.generation_requests(request.teacher_id), request)]

    def on_regeneration(item: In[RegenerationRequested]) -> list[Out]:
        requests = regenerate(item.event, spec, bus.produced_by)
        for request in requests:
            ROUTED.labels(request.task.unit, request.teacher_id, f"{request.strategy}:retry").inc()
        return [Out(bus.topics.generation_requests(r.teacher_id), r) for r in requests]

    def learn(verdict: CandidatesJudged) -> None:
        table.learn(verdict)
        for jc in verdict.candidates:
            stats = table.stats[(verdict.task.unit, jc.teacher_id)]
            ACCEPTANCE.labels(verdict.task.unit, jc.teacher_id).set(stats.acceptance)
            COST_PER_ACCEPTED.labels(verdict.task.unit, jc.teacher_id).set(
                stats.cost_per_accepted if stats.accepted else -1)
            JUDGED.labels(verdict.task.unit, jc.teacher_id).set(stats.judged)

    async def on_verdicts(items: list[In[CandidatesJudged]]) -> list[Out]:
        for item in items:
            learn(item.event)
        return []

    async def rebuild_table() -> None:
        """The learned table survives a restart: it is re-read from the verdicts topic."""
        for record in (await read_snapshot(settings, bus.topics.verdicts)).records:
            with contextlib.suppress(Exception):
                learn(parse_event(CandidatesJudged, record.value))

    bus.subscribe(bus.topics.tasks, TaskSubmitted, bus.per_event(on_task), group_id=settings.group("router"),
                  max_bytes=settings.max_task_bytes + ENVELOPE_BYTES)
    startup = [ingest.start] if ingest else []
    if any(unit.max_attempts > 1 for unit in spec.units.values()):
        bus.subscribe(bus.topics.regeneration, RegenerationRequested, bus.per_event(on_regeneration),
                      group_id=f"{settings.group('router')}-regeneration")
    if "chain" in strategies:
        bus.subscribe(bus.topics.candidates, CandidateGenerated, bus.per_event(on_chain_step),
                      group_id=f"{settings.group('router')}-chain")
    if "value" in strategies:
        startup.insert(0, rebuild_table)
        bus.subscribe(bus.topics.verdicts, CandidatesJudged, on_verdicts, group_id=f"{settings.group('router')}-feedback")
    return make_app(bus, spec, on_startup=startup, on_shutdown=[ingest.stop] if ingest else []), settings
