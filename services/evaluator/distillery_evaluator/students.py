"""Running a student on held-out tasks (before and after training) and plotting the scores."""

from __future__ import annotations

from pathlib import Path

from distillery.events import StudentTrained, SubjectScore, Task
from distillery.spec import CapabilitySpec, StudentSpec
from distillery.events import subject_order
from distillery_evaluator.logic import Output


def student_outputs(trained: StudentTrained, recipe: StudentSpec, spec: CapabilitySpec, tasks: list[Task],
                    device: str = "cpu") -> list[Output]:
    from distillery.ml.models import load_model
    from distillery.ml.recipes import load_base

    before = load_base(recipe, device)
    after = load_model(str(Path(trained.artifact_dir) / "model"), device=device)
    return _answer(before, "student:before", recipe, spec, tasks, device) + _answer(
        after, "student:after", recipe, spec, tasks, device)


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


def plot_scores(scores: list[SubjectScore], path: Path) -> str:
    """Grouped bars: accuracy per unit for every subject. Returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = sorted({s.unit for s in scores})
    subjects = sorted({s.subject for s in scores}, key=subject_order)
    width = 0.8 / max(1, len(subjects))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, subject in enumerate(subjects):
        acc = {s.unit: s.accuracy for s in scores if s.subject == subject}
        ax.bar([u + i * width for u in range(len(units))], [acc.get(u, 0) for u in units], width, label=subject)
    ax.set_xticks([u + width * (len(subjects) - 1) / 2 for u in range(len(units))], units)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
