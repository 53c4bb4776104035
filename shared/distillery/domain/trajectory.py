"""Tool trajectories: a bounded act-observe loop over declared tools, for teachers and students.

Each turn the model either calls one tool (a JSON object) or closes with its answer
(``FINAL: <answer>``). Calls are validated against the tool's schema and run from the registry
(:mod:`distillery.domain.tools`) under a time limit; model text is never executed. Turns of all loops in
a batch are generated together, through any :class:`~distillery.domain.backends.Backend`.

One implementation serves both sides on purpose: the teacher service records trajectories with
:func:`run_loops`, the trainer teaches a student each turn of them with :func:`training_turns`
(the exact prompts the loop sent), and the evaluator runs the student in the same loop. A student
trained on one prompt form and evaluated on another would be measured on something it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.contracts.events import Chain, Task, TrajectoryStep
from distillery.contracts.spec import CapabilitySpec, UnitSpec
from distillery.domain.backends import Backend
from distillery.domain.generate import Generation
from distillery.domain.prompts import signature, teacher_messages
from distillery.domain.scoring import parse_tool_calls
from distillery.domain.tools import REGISTRY, call_tool

PROTOCOL = (
    "To use a tool, reply with only one JSON object {\"name\": <tool>, \"arguments\": {...}}; you will then see "
    "its result. Use the tools for every fact and every computation. When you have the answer, reply with "
    "'FINAL: <answer>'."
)
CLOSURE = "FINAL:"
# Small models repeat a successful call unless told the next move explicitly.
NEXT_MOVE = "If the results above answer the question, reply 'FINAL: <answer>' now; otherwise call one more tool."


@dataclass(frozen=True)
class LoopItem:
    """What one loop starts from. ``key`` names its turns to the backend (``<key>`` for turn 0,
    ``<key>#<n>`` for turn n: the replay backend finds recorded turns by these keys); a chain step
    or a retry's judge feedback shape the first prompt as they would a single answer's."""

    key: str
    task: Task
    chain: Chain | None = None
    feedback: str | None = None


@dataclass
class Run:
    """One loop as it goes: its steps, what its turns cost together, and how it ended
    (``closure``: the closing text; ``error``: why it has none)."""

    item: LoopItem
    steps: list[TrajectoryStep] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    closure: str | None = None
    error: str | None = None
    last: Generation | None = None


def call_json(step: TrajectoryStep) -> str:
    """A step's call as the model is asked to write it (and as the transcript shows it)."""
    return json.dumps({"name": step.tool, "arguments": step.arguments})


def turn_messages(unit: UnitSpec, task: Task, steps: Sequence[TrajectoryStep], chain: Chain | None = None,
                  feedback: str | None = None, compact: bool = False) -> tuple[str, str]:
    """(system, user) of the turn after ``steps``: the unit's instruction, the tool protocol and
    the transcript of the steps so far. ``compact`` (students) lists the tools as bare signatures,
    as the student's single-answer prompt does: a small model learns the tools from its examples,
    and every turn's prompt is prefilled again."""
    system, user = teacher_messages(unit, task, chain, feedback)
    tools = "\n".join(signature(REGISTRY[name].spec, with_docs=not compact) for name in unit.tools)
    system = f"{system}\n\n{PROTOCOL}\n\nTools:\n{tools}".strip()
    for step in steps:
        result = f"Error: {step.error}" if step.error else f"Result: {step.observation}"
        user += f"\n\nTool call: {call_json(step)}\n{result}"
    if steps:
        user += f"\n\n{NEXT_MOVE}"
    return system, user


def messages(run: Run, spec: CapabilitySpec, compact: bool = False) -> tuple[str, str]:
    """(system, user) of a run's next turn."""
    item = run.item
    return turn_messages(spec.units[item.task.unit], item.task, run.steps, item.chain, item.feedback, compact)


def turn_key(key: str, turn: int) -> str:
    return key if turn == 0 else f"{key}#{turn}"


def run_loops(items: list[LoopItem], backend: Backend, spec: CapabilitySpec, max_new_tokens: int,
              compact: bool = False) -> list[Run]:
    """Run every item's loop to its closure (or error), one batched backend call per turn
    (``compact``: the student's prompts, see :func:`turn_messages`)."""
    runs = [Run(item) for item in items]
    max_steps = max((spec.units[item.task.unit].max_tool_steps for item in items), default=0)
    for turn in range(max_steps + 1):
        active = [run for run in runs if run.closure is None and run.error is None]
        if not active:
            break
        requests = [(turn_key(run.item.key, turn), *messages(run, spec, compact)) for run in active]
        try:
            gens = backend.generate(requests, max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - the whole turn failed: every active loop fails with it
            for run in active:
                run.error = f"{type(exc).__name__}: {exc}"
            break
        for run, gen in zip(active, gens, strict=True):
            _advance(run, gen, spec, last_turn=turn == spec.units[run.item.task.unit].max_tool_steps)
    return runs


def _advance(run: Run, gen: Generation, spec: CapabilitySpec, last_turn: bool) -> None:
    """Count the turn, then: a failed generation ends the run, text without a parseable call
    closes it, a call past the step limit ends it unclosed, any other call runs and is recorded."""
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
    unit = spec.units[run.item.task.unit]
    observation, error = call_tool(calls[0], unit.tools, unit.tool_timeout_s)
    run.steps.append(TrajectoryStep(tool=calls[0].name, arguments=calls[0].arguments, observation=observation,
                                    error=error))


# --- learning the loop --------------------------------------------------------------------------


def recorded_step(entry: dict[str, Any]) -> TrajectoryStep:
    """A step as a curated sample stores it (``SampleCurated.tool_steps``: the editor adds a
    trigger and the recovery link, which the loop's transcript never shows)."""
    return TrajectoryStep(tool=entry["tool"], arguments=entry.get("arguments") or {},
                          observation=entry.get("observation") or "", error=entry.get("error"))


def closure_line(final: str) -> str:
    """The closing turn for a final answer: as written if it already closes, else ``FINAL: <answer>``
    (a ``#### <answer>`` mark, the editor's canonical final-answer form, becomes the answer)."""
    text = final.strip()
    if text.upper().startswith(CLOSURE):
        return text
    return f"{CLOSURE} {text.removeprefix('####').strip()}"


def training_turns(unit: UnitSpec, task: Task, steps: Sequence[TrajectoryStep], closure: str,
                   compact: bool = False) -> list[tuple[str, str, str]]:
    """(system, user, target) for each turn of a recorded trajectory: the prompt the loop sends at
    that turn, and what the model wrote there (the step's call, then the closure)."""
    targets = [call_json(step) for step in steps] + [closure]
    return [(*turn_messages(unit, task, steps[:turn], compact=compact), target) for turn, target in enumerate(targets)]
