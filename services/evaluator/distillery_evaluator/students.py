"""Running a student on held-out tasks, before and after training.

A task of a unit with tools is answered in the act-observe loop the teachers answered it in
(:mod:`distillery.domain.trajectory`): the student calls tools, sees their results and closes with
``FINAL: <answer>``, as it was trained to turn by turn. Other tasks get one generation.

Outputs are cached next to the model they came from, so an interrupted experiment resumes
without generating again: the trained student's under ``<artifact_dir>/evaluation``, the
untrained base's (shared by every run of the same base) beside the student's artifacts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.contracts import ids
from distillery.contracts.events import StudentTrained, Task
from distillery.contracts.spec import CapabilitySpec, StudentSpec
from distillery.domain.generate import Generation
from distillery.domain.trajectory import PROTOCOL, LoopItem, Run, run_loops
from distillery_evaluator.logic import Output

AFTER, BEFORE = "student:after", "student:before"
# Output fields a cache keeps; the task and the subject come from the caller.
_CACHED_FIELDS = ("text", "latency_s", "cost_usd", "output_tokens", "missing", "tool_calls")


def student_outputs(trained: StudentTrained, recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task],
                    device: str = "cpu", include_before: bool = True) -> list[Output]:
    """The trained student's answers, and (``include_before``) the untrained base's on the same prompts."""
    from distillery.domain.models import load_model
    from distillery.domain.students import load_base

    artifact = Path(trained.artifact_dir)
    outputs = cached_answers(artifact / "evaluation" / "outputs.after.json", AFTER, recipe, spec, tasks, device,
                             lambda: load_model(str(artifact / "model"), device=device))
    if include_before:
        outputs = cached_answers(base_outputs_path(artifact, recipe), BEFORE, recipe, spec, tasks, device,
                                 lambda: load_base(recipe, device)) + outputs
    return outputs


# --- the cache -------------------------------------------------------------------------------


def base_outputs_path(artifact_dir: Path, recipe: StudentSpec) -> Path:
    """Where the untrained base's outputs live: beside the student's artifacts (``<artifact_root>/<student>``),
    in a folder named by what makes the base (the same base is every run's "before")."""
    base = ids.content_id("base", recipe.base, recipe.seed, recipe.hidden_size, recipe.layers).removeprefix("base_")
    return artifact_dir.parent / f"base-{base}" / "outputs.json"


def outputs_key(recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task]) -> str:
    """What decides a model's outputs besides the model: the tasks (ids and content), their units'
    prompts and loop limits (the whole unit spec, to be safe), the loop protocol and the
    generation settings (batching changes padding, which can change greedy outputs)."""
    units = sorted({t.unit for t in tasks})
    return ids.content_id("outputs", [t.model_dump(mode="json") for t in tasks],
                          {u: spec.units[u].model_dump(mode="json") for u in units}, PROTOCOL,
                          recipe.max_new_tokens, recipe.batch_size)


def read_cached(path: Path, key: str, subject: str, tasks: list[Task]) -> list[Output] | None:
    """The outputs saved under ``key``, or None when there are none (or they are unreadable)."""
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        return None
    if not entry or entry.get("task_ids") != [t.task_id for t in tasks]:
        return None
    return [Output(task, subject, **{f: row[f] for f in _CACHED_FIELDS}) for task, row in zip(tasks, entry["outputs"],
                                                                                               strict=True)]


def save_cached(path: Path, key: str, outputs: list[Output]) -> None:
    """Add ``outputs`` under ``key``, atomically (a reader sees the old file or the new one)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    saved[key] = {"task_ids": [o.task.task_id for o in outputs],
                  "outputs": [{f: getattr(o, f) for f in _CACHED_FIELDS} for o in outputs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(json.dumps(saved, ensure_ascii=False, indent=1))
    os.replace(tmp.name, path)


def cached_answers(path: Path, subject: str, recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task],
                   device: str, load: Callable[[], tuple[Any, Any]]) -> list[Output]:
    """The model's answers from its cache, else generated (the model is loaded only then) and saved."""
    if not tasks:
        return []
    key = outputs_key(recipe, spec, tasks)
    cached = read_cached(path, key, subject, tasks)
    if cached is not None:
        return cached
    outputs = answer(load(), subject, recipe, spec, tasks, device)
    save_cached(path, key, outputs)
    return outputs


# --- answering -------------------------------------------------------------------------------


class StudentBackend:
    """The student as a loop backend: each turn's (system, user) rendered with the student's chat
    template, exactly as the trainer rendered the turns it learned from, generated greedily in batches."""

    def __init__(self, generator: Any, batch_size: int) -> None:
        self.generator = generator
        self.batch_size = batch_size

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        from distillery.domain.generate import render_chat

        prompts = [render_chat(self.generator.tokenizer, system, user) for _, system, user in requests]
        return self.generator.generate(prompts, max_new_tokens=max_new_tokens, batch_size=self.batch_size)


def answer(model_and_tokenizer: tuple[Any, Any], subject: str, recipe: StudentSpec, spec: CapabilitySpec,
           tasks: list[Task], device: str) -> list[Output]:
    """One output per task, in order: tool units through the loop, the others in one generation."""
    from distillery.domain.generate import Generator

    model, tokenizer = model_and_tokenizer
    model.eval()
    generator = Generator(model, tokenizer, device=device)
    looped = [t for t in tasks if spec.units[t.unit].uses_tools]
    single = [t for t in tasks if not spec.units[t.unit].uses_tools]
    by_task = {o.task.task_id: o for o in single_answers(generator, subject, recipe, spec, single)}
    by_task.update((o.task.task_id, o) for o in loop_answers(StudentBackend(generator, recipe.batch_size), subject,
                                                             recipe, spec, looped))
    return [by_task[t.task_id] for t in tasks]


def single_answers(generator: Any, subject: str, recipe: StudentSpec, spec: CapabilitySpec,
                   tasks: list[Task]) -> list[Output]:
    """One generation per task, on the prompt the student was trained on for it."""
    from distillery.domain.students import student_prompt

    if not tasks:
        return []
    prompts = [student_prompt(generator.tokenizer, spec.units[t.unit], t) for t in tasks]
    gens = generator.generate(prompts, max_new_tokens=recipe.max_new_tokens, batch_size=recipe.batch_size)
    return [Output(t, subject, g.text, g.seconds, recipe.price.cost(g.prompt_tokens, g.completion_tokens, g.seconds),
                   g.completion_tokens)
            for t, g in zip(tasks, gens, strict=True)]


def loop_answers(backend: Any, subject: str, recipe: StudentSpec, spec: CapabilitySpec,
                 tasks: list[Task]) -> list[Output]:
    """Each task answered in the act-observe loop; see :func:`loop_output`."""
    if not tasks:
        return []
    runs = run_loops([LoopItem(key=t.task_id, task=t) for t in tasks], backend, spec, recipe.max_new_tokens,
                     compact=True)  # the prompts the student was trained on (training.student_turns)
    return [loop_output(run, subject, recipe) for run in runs]


def loop_output(run: Run, subject: str, recipe: StudentSpec) -> Output:
    """A finished loop as an output: the closure is the answer; latency, cost and tokens are every
    turn's together; a loop that never closed is ``missing`` its answer the way a teacher's failed
    trajectory is (``error: no_closure``, ``error: <exception>``), and is scored wrong."""
    return Output(run.item.task, subject, run.closure or "", run.seconds,
                  recipe.price.cost(run.prompt_tokens, run.completion_tokens, run.seconds), run.completion_tokens,
                  missing=f"error: {run.error.split(':')[0]}" if run.error else None, tool_calls=len(run.steps))
