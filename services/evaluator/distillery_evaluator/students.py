"""Running a student on held-out tasks (before and after training) and plotting the scores."""

from __future__ import annotations

from pathlib import Path

from distillery.events import StudentTrained, Task
from distillery.spec import CapabilitySpec, StudentSpec
from distillery_evaluator.logic import Output


def student_outputs(trained: StudentTrained, recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task],
                    device: str = "cpu", include_before: bool = True) -> list[Output]:
    """The trained student's answers, and (``include_before``) the untrained base's on the same prompts."""
    from distillery.ml.models import load_model
    from distillery.ml.recipes import load_base

    after = load_model(str(Path(trained.artifact_dir) / "model"), device=device)
    outputs = _answer(after, "student:after", recipe, spec, tasks, device)
    if include_before:
        outputs = _answer(load_base(recipe, device), "student:before", recipe, spec, tasks, device) + outputs
    return outputs


def _answer(model_and_tokenizer, subject: str, recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task],
            device: str) -> list[Output]:
    from distillery.ml.generate import Generator
    from distillery.ml.recipes import student_prompt

    if not tasks:
        return []
    model, tokenizer = model_and_tokenizer
    model.eval()
    prompts = [student_prompt(tokenizer, spec.units[t.unit], t) for t in tasks]
    gens = Generator(model, tokenizer, device=device).generate(prompts, max_new_tokens=recipe.max_new_tokens,
                                                                batch_size=recipe.batch_size)
    return [
        Output(t, subject, g.text, g.seconds, recipe.price.cost(g.prompt_tokens, g.completion_tokens, g.seconds),
               g.completion_tokens)
        for t, g in zip(tasks, gens, strict=True)
    ]
