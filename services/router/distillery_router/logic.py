"""Routing decisions as plain functions: a task in, generation requests out."""

from __future__ import annotations

from distillery import ids
from distillery.bus import Rejected
from distillery.events import GenerationRequested, TaskSubmitted, Trace
from distillery.spec import CapabilitySpec, UnitSpec


def route_reason(unit_name: str, unit: UnitSpec, teacher_id: str) -> str:
    """Why this teacher was chosen, recorded on the request for audit."""
    routing = unit.routing
    if routing.strategy == "single":
        return f"unit '{unit_name}' routes single to '{teacher_id}' (spec routing.teachers)"
    others = [t for t in routing.teachers if t != teacher_id]
    return f"unit '{unit_name}' runs a competition of {len(routing.teachers)}: '{teacher_id}' vs {others}"


def route(event: TaskSubmitted, spec: CapabilitySpec, produced_by: str) -> list[GenerationRequested]:
    """One generation request per chosen teacher; unknown units are rejected."""
    task = event.task
    unit = spec.units.get(task.unit)
    if unit is None:
        raise Rejected("unknown_unit", f"unknown capability unit '{task.unit}' (spec has {sorted(spec.units)})")
    teachers = unit.routing.teachers
    requests = []
    for teacher_id in teachers:
        request_id = ids.request_id_for(task.task_id, teacher_id)
        requests.append(
            GenerationRequested(
                request_id=request_id,
                task=task,
                teacher_id=teacher_id,
                strategy=unit.routing.strategy,
                route_reason=route_reason(task.unit, unit, teacher_id),
                expected_candidates=len(teachers),
                max_new_tokens=unit.routing.max_new_tokens or spec.teachers[teacher_id].max_new_tokens,
                produced_by=produced_by,
                trace=Trace(task_id=task.task_id, causation_id=event.event_id),
            )
        )
    return requests
