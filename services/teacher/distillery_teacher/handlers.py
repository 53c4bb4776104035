"""The teacher's use case: a batch of generation requests in, one candidate per request out (never silence)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from distillery.contracts.channels import TEACHER_STEM
from distillery.contracts.events import CandidateGenerated, GenerationRequested, LoopDecided
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import TeacherSpec
from distillery.domain.backends import Backend
from distillery.runtime.counting import child, count_by
from distillery.runtime.wiring import Context, DeadLetter, In, Out, Subscription
from distillery_teacher import metrics
from distillery_teacher.logic import answer


class TeacherSettings(ServiceSettings):
    teacher_id: str = Field(min_length=1)
    device: str = "cpu"
    preload: bool = True


@dataclass(kw_only=True)
class TeacherDeps(Context):
    settings: TeacherSettings
    backend: Backend

    def __post_init__(self) -> None:
        # A teacher consumes only its own request topic, in its own group, so each teacher scales by its own lag.
        self.params = {**self.params, "teacher_id": self.settings.teacher_id}

    @property
    def teacher_id(self) -> str:
        return self.settings.teacher_id

    @property
    def teacher(self) -> TeacherSpec:
        return self.spec.teachers[self.teacher_id]


async def on_generation_requested(items: list[In[GenerationRequested]], deps: TeacherDeps) -> list[Out | DeadLetter]:
    # a unit this spec does not know has no prompt: its request is dead-lettered alone, not the batch failed
    unknown = [DeadLetter(item.record, "unknown_unit", f"unknown unit '{item.event.task.unit}': not in the teacher's spec")
               for item in items if item.event.task.unit not in deps.spec.units]
    requests = [item.event for item in items if item.event.task.unit in deps.spec.units]
    args = (requests, deps.backend, deps.spec, deps.teacher, deps.produced_by)
    candidates = answer(*args) if answers_inline(requests, deps) else await asyncio.to_thread(answer, *args)
    count(candidates, deps.teacher_id)
    return [*unknown, *(Out(deps.topics.candidates, c) for c in candidates)]


def answers_inline(requests: list[GenerationRequested], deps: TeacherDeps) -> bool:
    """Generating is CPU/GPU-bound, waits on a server or runs tools: a worker thread keeps the event
    loop (and the consumer's heartbeats) alive. A replay that is not paced is a lookup, cheaper here
    than the hand-off to a thread (bench/hot_path.py)."""
    return (not getattr(deps.backend, "blocking", True)
            and not any(deps.spec.units[r.task.unit].uses_tools for r in requests))


def count(candidates: list[CandidateGenerated], teacher_id: str) -> None:
    """The batch's candidates, errors, tokens, cost and latencies (added once per label set)."""
    count_by(metrics.CANDIDATES, ((teacher_id, c.finish_reason) for c in candidates))
    answered = [c for c in candidates if not c.error]
    if len(answered) < len(candidates):
        child(metrics.ERRORS, teacher_id).inc(len(candidates) - len(answered))
    if not answered:
        return
    child(metrics.TOKENS, teacher_id, "prompt").inc(sum(c.usage.prompt_tokens for c in answered))
    child(metrics.TOKENS, teacher_id, "completion").inc(sum(c.usage.completion_tokens for c in answered))
    child(metrics.COST, teacher_id).inc(sum(c.cost_usd for c in answered))
    latency = child(metrics.LATENCY, teacher_id)
    for candidate in answered:
        latency.observe(candidate.latency_s)


def on_loop_decided(event: LoopDecided, deps: TeacherDeps) -> list[Out]:
    """A student deployment follows the promotions topic: which artifact it serves."""
    deps.backend.follow(event)
    metrics.SERVING.labels(deps.teacher_id).set(0 if deps.backend.not_ready() else 1)
    return []


def serves_a_student(deps: TeacherDeps) -> bool:
    return deps.teacher.backend == "student"


def batch_limits(deps: TeacherDeps) -> dict[str, Any]:
    """Two of the backend's batches per poll; a slow model may take long between polls."""
    return {"max_records": deps.teacher.batch_size * 2, "max_poll_interval_ms": 1_800_000}


SUBSCRIPTIONS = [
    Subscription(TEACHER_STEM, GenerationRequested, on_generation_requested, batch=True, options=batch_limits),
    Subscription("promotions", LoopDecided, on_loop_decided, "-promotions", enabled=serves_a_student),
]
