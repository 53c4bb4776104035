"""Tool trajectories for teacher requests: the shared act-observe loop (:mod:`distillery.domain.trajectory`)
run over requests, each run turned into a candidate that carries every step: the call, its
arguments, the observation or the error, and the closure.

The loop itself lives in the shared library because students learn and run the very same loop.
"""

from __future__ import annotations

from collections import defaultdict

from distillery.contracts.events import CandidateGenerated, GenerationRequested, Usage
from distillery.contracts.spec import CapabilitySpec, TeacherSpec
from distillery.domain.backends import Backend
from distillery.domain.generate import Generation
from distillery.domain.trajectory import LoopItem, Run, run_loops


def loop_item(request: GenerationRequested) -> LoopItem:
    """A request as a loop: keyed by its task id (the replay backend's key), with its chain and feedback."""
    return LoopItem(key=request.task.task_id, task=request.task, chain=request.chain, feedback=request.feedback)


def run_trajectories(requests: list[GenerationRequested], backend: Backend, spec: CapabilitySpec, teacher: TeacherSpec,
                     produced_by: str, make_candidate) -> list[CandidateGenerated]:
    """One candidate per request, each with its full trajectory; requests of one token budget
    share their turns' batches."""
    by_budget: dict[int, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        by_budget[request.max_new_tokens].append(index)
    runs: dict[int, Run] = {}
    for budget, indices in by_budget.items():
        # a served student runs the loop on the turn prompts it was trained on
        loops = run_loops([loop_item(requests[i]) for i in indices], backend, spec, budget,
                          compact=teacher.backend == "student")
        runs.update(zip(indices, loops, strict=True))
    return [_candidate(request, runs[i], teacher, produced_by, make_candidate) for i, request in enumerate(requests)]


def _candidate(request: GenerationRequested, run: Run, teacher: TeacherSpec, produced_by: str,
               make_candidate) -> CandidateGenerated:
    """The run as one generation (the closure, with every turn's usage and time summed), then its steps."""
    total = Generation(text=run.closure or "", prompt_tokens=run.prompt_tokens,
                       completion_tokens=run.completion_tokens,
                       finish_reason=run.last.finish_reason if run.last else "error",
                       mean_token_prob=run.last.mean_token_prob if run.last else None, seconds=run.seconds,
                       error=run.error)
    candidate = make_candidate(request, total, teacher, produced_by)
    return candidate.model_copy(update={"trajectory": run.steps,
                                        "usage": Usage(prompt_tokens=run.prompt_tokens,
                                                       completion_tokens=run.completion_tokens)})
