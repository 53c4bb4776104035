"""Teacher wiring: consumes only its own request topic, so each teacher scales by its own lag."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Histogram
from pydantic import Field

from distillery.runtime.bus import In, Out
from distillery.contracts.events import GenerationRequested
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import ConfigError, ServiceSettings, load_settings
from distillery.contracts.spec import load_spec
from distillery_teacher import __version__
from distillery.domain.backends import TransformersBackend, make_backend
from distillery_teacher.logic import answer

TOKENS = Counter("distillery_teacher_tokens_total", "Tokens processed", ["teacher", "kind"])
COST = Counter("distillery_teacher_cost_usd_total", "Generation cost in USD", ["teacher"])
LATENCY = Histogram("distillery_teacher_latency_seconds", "Generation latency per request", ["teacher"])
CANDIDATES = Counter("distillery_teacher_candidates_total", "Candidates produced", ["teacher", "finish_reason"])
ERRORS = Counter("distillery_teacher_errors_total", "Failed generations", ["teacher"])


class TeacherSettings(ServiceSettings):
    teacher_id: str = Field(min_length=1)
    device: str = "cpu"
    preload: bool = True


def build():
    settings = load_settings(TeacherSettings)
    spec = load_spec(settings.spec_path)
    teacher = spec.teachers.get(settings.teacher_id)
    if teacher is None:
        raise ConfigError(f"invalid setting teacher_id (env DISTILLERY_TEACHER_ID): '{settings.teacher_id}' is not a teacher of the spec")
    backend = make_backend(teacher, settings.teacher_id, settings.device)
    bus = make_bus(settings, "teacher", __version__)
    name = settings.teacher_id

    async def on_requests(items: list[In[GenerationRequested]]) -> list[Out]:
        requests = [item.event for item in items]
        # Generation is CPU/GPU-bound: a worker thread keeps the event loop (and heartbeats) alive.
        candidates = await asyncio.to_thread(answer, requests, backend, spec, teacher, bus.produced_by)
        for cand in candidates:
            CANDIDATES.labels(name, cand.finish_reason).inc()
            if cand.error:
                ERRORS.labels(name).inc()
                continue
            TOKENS.labels(name, "prompt").inc(cand.usage.prompt_tokens)
            TOKENS.labels(name, "completion").inc(cand.usage.completion_tokens)
            COST.labels(name).inc(cand.cost_usd)
            LATENCY.labels(name).observe(cand.latency_s)
        return [Out(bus.topics.candidates, c) for c in candidates]

    bus.subscribe(
        bus.topics.generation_requests(name),
        GenerationRequested,
        on_requests,
        group_id=settings.consumer_group or f"distillery-teacher-{name}",
        max_records=teacher.batch_size * 2,
        max_poll_interval_ms=1_800_000,
    )

    async def preload() -> None:
        if settings.preload and isinstance(backend, TransformersBackend):
            await asyncio.to_thread(backend.load)

    if teacher.backend == "openai":
        # The service starts even when the model server is down; readiness follows the server.
        async def start_probe() -> None:
            backend.start_probe()

        async def close_backend() -> None:
            backend.close()

        return make_app(bus, spec, on_startup=[start_probe], on_shutdown=[close_backend],
                        ready_check=backend.is_ready), settings
    return make_app(bus, spec, on_startup=[preload]), settings
