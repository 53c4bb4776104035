"""Tool trajectories: a bounded act-observe loop over declared tools.

Each turn the teacher either calls one tool (a JSON object) or closes with its answer.
Calls are validated against the tool's schema and run from the registry
(:mod:`distillery.tools`) under a time limit; model text is never executed. Turns of all
trajectories in a batch are generated together. The candidate carries every step: the
call, its arguments, the observation or the error, and the closure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from distillery.events import CandidateGenerated, GenerationRequested, TrajectoryStep, Usage
from distillery.ml.generate import Generation
from distillery.prompts import signature, teacher_messages
from distillery.scoring import parse_tool_calls
from distillery.spec import CapabilitySpec, TeacherSpec
from distillery.tools import REGISTRY, call_tool

PROTOCOL = (
    "To use a tool, reply with only one JSON object {\"name\": <tool>, \"arguments\": {...}}; you will then see "
    "its result. Use the tools for every fact and every computation. When you have the answer, reply with "
    "'FINAL: <answer>'."
)


@dataclass
class Run:
    request: GenerationRequested
    steps: list[TrajectoryStep] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    closure: str | None = None
    error: str | None = None
    last: Generation | None = None


def messages(run: Run, spec: CapabilitySpec) -> tuple[str, str]:
    """The unit's instruction, the tool protocol and the transcript of the steps so far."""
    unit = spec.units[run.request.task.unit]
    system, user = teacher_messages(unit, run.request.task, run.request.chain, run.request.feedback)
    tools = "\n".join(signature(REGISTRY[name].spec) for name in unit.tools)
    system = f"{system}\n\n{PROTOCOL}\n\nTools:\n{tools}".strip()
    for step in run.steps:
        call = json.dumps({"name": step.tool, "arguments": step.arguments})
        result = f"Error: {step.error}" if step.error else f"Result: {step.observation}"
        user += f"\n\nTool call: {call}\n{result}"
    if run.steps:  # small models repeat a successful call unless told the next move explicitly
        user += "\n\nIf the results above answer the question, reply 'FINAL: <answer>' now; otherwise call one more tool."
    return system, user


def run_trajectories(requests: list[GenerationRequested], backend, spec: CapabilitySpec, teacher: TeacherSpec,
                     produced_by: str, make_candidate) -> list[CandidateGenerated]:
    """One candidate per request, each with its full trajectory."""
    runs = [Run(r) for r in requests]
    max_steps = max(spec.units[r.task.unit].max_tool_steps for r in requests)
    for turn in range(max_steps + 1):
        active = [run for run in runs if run.closure is None and run.error is None]
        if not active:
            break
        keys = [run.request.task.task_id if turn == 0 else f"{run.request.task.task_id}#{turn}" for run in active]
        try:
            gens = backend.generate([(k, *messages(run, spec)) for k, run in zip(keys, active, strict=True)],
                                    active[0].request.max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - the whole turn failed: every active trajectory fails with it
            for run in active:
                run.error = f"{type(exc).__name__}: {exc}"
            break
        for run, gen in zip(active, gens, strict=True):
            _advance(run, gen, spec, last_turn=turn == spec.units[run.request.task.unit].max_tool_steps)
    return [_candidate(run, teacher, produced_by, make_candidate) for run in runs]


def _advance(run: Run, gen: Generation, spec: CapabilitySpec, last_turn: bool) -> None:
    run.last = gen
    run.prompt_tokens += gen.prompt_tokens
    run.completion_tokens += gen.completion_tokens
    run.seconds += gen.seconds
    if getattr(gen, "error", None):
        run.error = gen.error
        return
    calls = parse_tool_calls(gen.text)
    if not calls:  # no (parseable) call: this turn closes the trajectory
        run.closure = gen.text.strip()
        return
    if last_turn:
        run.error = f"no_closure: still calling tools after {len(run.steps)} steps"
        return
    unit = spec.units[run.request.task.unit]
    observation, error = call_tool(calls[0], unit.tools, unit.tool_timeout_s)
    run.steps.append(TrajectoryStep(tool=calls[0].name, arguments=calls[0].arguments, observation=observation,
                                    error=error))


def _candidate(run: Run, teacher: TeacherSpec, produced_by: str, make_candidate) -> CandidateGenerated:
    total = Generation(text=run.closure or "", prompt_tokens=run.prompt_tokens,
                       completion_tokens=run.completion_tokens,
                       finish_reason=run.last.finish_reason if run.last else "error",
                       mean_token_prob=run.last.mean_token_prob if run.last else None, seconds=run.seconds,
                       error=run.error)
    candidate = make_candidate(run.request, total, teacher, produced_by)
    return candidate.model_copy(update={"trajectory": run.steps,
                                        "usage": Usage(prompt_tokens=run.prompt_tokens,
                                                       completion_tokens=run.completion_tokens)})
