"""The teacher's use case: a batch of generation requests in, one candidate per request out (never silence)."""

from __future__ import annotations

import asyncio
from typing import Any

from distillery.contracts.channels import TEACHER_STEM
from distillery.contracts.events import CandidateGenerated, GenerationRequested
from distillery.runtime.wiring import In, Out, Subscription
from distillery_teacher import metrics
from distillery_teacher.bootstrap import TeacherDeps
from distillery_teacher.logic import answer


async def on_generation_requested(items: list[In[GenerationRequested]], deps: TeacherDeps) -> list[Out]:
    requests = [item.event for item in items]
    # Generation is CPU/GPU-bound: a worker thread keeps the event loop (and heartbeats) alive.
    candidates = await asyncio.to_thread(answer, requests, deps.backend, deps.spec, deps.teacher, deps.produced_by)
    for candidate in candidates:
        count(candidate, deps.teacher_id)
    return [Out(deps.topics.candidates, c) for c in candidates]


def count(candidate: CandidateGenerated, teacher_id: str) -> None:
    metrics.CANDIDATES.labels(teacher_id, candidate.finish_reason).inc()
    if candidate.error:
        metrics.ERRORS.labels(teacher_id).inc()
        return
    metrics.TOKENS.labels(teacher_id, "prompt").inc(candidate.usage.prompt_tokens)
    metrics.TOKENS.labels(teacher_id, "completion").inc(candidate.usage.completion_tokens)
    metrics.COST.labels(teacher_id).inc(candidate.cost_usd)
    metrics.LATENCY.labels(teacher_id).observe(candidate.latency_s)


def batch_limits(deps: TeacherDeps) -> dict[str, Any]:
    """Two of the backend's batches per poll; a slow model may take long between polls."""
    return {"max_records": deps.teacher.batch_size * 2, "max_poll_interval_ms": 1_800_000}


SUBSCRIPTIONS = [
    Subscription(TEACHER_STEM, GenerationRequested, on_generation_requested, batch=True, options=batch_limits),
]
