"""Router wiring: tasks topic in, per-teacher generation request topics out."""

from __future__ import annotations

from prometheus_client import Counter

from distillery.bus import In, Out
from distillery.events import TaskSubmitted
from distillery.service import make_app, make_bus
from distillery.settings import ServiceSettings, load_settings
from distillery.spec import load_spec
from distillery_router import __version__
from distillery_router.logic import route

ROUTED = Counter("distillery_router_requests_total", "Generation requests sent", ["unit", "teacher", "strategy"])


def build():
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    bus = make_bus(settings, "router", __version__)

    def on_task(item: In[TaskSubmitted]) -> list[Out]:
        requests = route(item.event, spec, bus.produced_by)
        for request in requests:
            ROUTED.labels(request.task.unit, request.teacher_id, request.strategy).inc()
        return [Out(bus.topics.generation_requests(r.teacher_id), r) for r in requests]

    bus.subscribe(bus.topics.tasks, TaskSubmitted, bus.per_event(on_task), group_id=settings.group("router"),
                  max_bytes=settings.max_task_bytes)
    return make_app(bus, spec), settings
