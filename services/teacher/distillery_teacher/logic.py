"""Teacher logic as plain functions: requests in, candidates (never silence) out."""

from __future__ import annotations

import logging
from collections import defaultdict

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, GenerationRequested, TokenLogprobs, TopTokens, Trace, Usage
from distillery.contracts.spec import CapabilitySpec, TeacherSpec
from distillery.domain.backends import Backend
from distillery.domain.generate import Generation
from distillery.domain.prompts import system_prompt, teacher_messages
from distillery_teacher.trajectory import run_trajectories

log = logging.getLogger("distillery.teacher")


def _from_request(request: GenerationRequested, produced_by: str, **fields) -> CandidateGenerated:
    """What every candidate copies from its request: ids, task, routing, chain and attempt."""
    return CandidateGenerated(
        candidate_id=ids.candidate_id_for(request.request_id),
        request_id=request.request_id,
        task=request.task,
        teacher_id=request.teacher_id,
        strategy=request.strategy,
        route_reason=request.route_reason,
        expected_candidates=request.expected_candidates,
        chain=request.chain,
        attempt=request.attempt,
        shadow=request.shadow,
        produced_by=produced_by,
        trace=Trace(task_id=request.task.task_id, causation_id=request.event_id),
        **fields,
    )


def candidate_from(request: GenerationRequested, gen: Generation, teacher: TeacherSpec, produced_by: str) -> CandidateGenerated:
    """The candidate for one generation; a generation the backend marked failed becomes a failed candidate."""
    if gen.error is not None:
        log.warning("teacher failed on %s: %s", request.request_id, gen.error)
        return failed_candidate(request, gen.error, produced_by, latency_s=gen.seconds)
    return _from_request(
        request, produced_by,
        text=gen.text,
        usage=Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens),
        latency_s=round(gen.seconds, 4),
        cost_usd=teacher.price.cost(gen.prompt_tokens, gen.completion_tokens, gen.seconds),
        finish_reason=gen.finish_reason,
        confidence=gen.mean_token_prob,
        logprobs=cached_logprobs(gen),
    )


def cached_logprobs(gen: Generation) -> TokenLogprobs | None:
    """The generation's top-k token distribution, cached on the candidate for logit distillation."""
    if not gen.top_logprobs or gen.token_ids is None or gen.tokenizer is None:
        return None
    top = [TopTokens(ids=[i for i, _ in pairs], logprobs=[round(lp, 4) for _, lp in pairs]) for pairs in gen.top_logprobs]
    return TokenLogprobs(tokenizer=gen.tokenizer, token_ids=gen.token_ids, top=top)


def failed_candidate(request: GenerationRequested, error: str, produced_by: str,
                     latency_s: float = 0.0) -> CandidateGenerated:
    """A failure is a candidate with an error, so the judge can pool it as ``failure``.

    ``latency_s`` is the time spent before giving up (retries included), where known."""
    return _from_request(request, produced_by, text="", latency_s=round(latency_s, 4), finish_reason="error",
                         error=error[:500])


def _prompt(request: GenerationRequested, spec: CapabilitySpec, teacher: TeacherSpec) -> tuple[str, str, str]:
    unit = spec.units[request.task.unit]
    if teacher.backend == "student":  # a served student sees the prompt it was trained on
        return request.task.task_id, system_prompt(unit, request.task, compact=True), request.task.prompt
    system, user = teacher_messages(unit, request.task, request.chain, request.feedback)
    return request.task.task_id, system, user


def answer(
    requests: list[GenerationRequested],
    backend: Backend,
    spec: CapabilitySpec,
    teacher: TeacherSpec,
    produced_by: str,
) -> list[CandidateGenerated]:
    """Generate for a batch of requests, grouped by token budget. A backend reports a request
    that failed on its own as a Generation with ``error`` (the openai backend does); a backend
    that raises for the whole batch gets it retried request by request, so one bad request
    fails alone either way."""
    candidates: dict[str, CandidateGenerated] = {}
    tool_units = [r for r in requests if spec.units[r.task.unit].uses_tools]
    if tool_units:  # act-observe loops over declared tools (trajectory.py)
        for cand in run_trajectories(tool_units, backend, spec, teacher, produced_by, candidate_from):
            candidates[cand.request_id] = cand
    by_budget: dict[int, list[GenerationRequested]] = defaultdict(list)
    for request in requests:
        if request.request_id not in candidates:
            by_budget[request.max_new_tokens].append(request)
    for budget, group in by_budget.items():
        try:
            gens = backend.generate([_prompt(r, spec, teacher) for r in group], budget)
            for request, gen in zip(group, gens, strict=True):
                candidates[request.request_id] = candidate_from(request, gen, teacher, produced_by)
        except Exception:  # noqa: BLE001 - fall back to one request at a time
            for request in group:
                candidates[request.request_id] = _answer_one(request, backend, spec, teacher, produced_by, budget)
    return [candidates[r.request_id] for r in requests]


def _answer_one(request, backend, spec, teacher, produced_by, budget) -> CandidateGenerated:
    try:
        (gen,) = backend.generate([_prompt(request, spec, teacher)], budget)
        return candidate_from(request, gen, teacher, produced_by)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed candidate
        log.warning("teacher failed on %s: %s", request.request_id, exc)
        return failed_candidate(request, f"{type(exc).__name__}: {exc}", produced_by)
