"""One training run: snapshot -> recipe's dataset -> SFT -> artifact with full lineage.

Idempotent: the student id is a hash of the recipe and the dataset, so a redelivered
request finds the finished artifact and re-announces it instead of training twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery import ids
from distillery.events import SampleCurated
from distillery.ml.recipes import load_base, student_prompt
from distillery.spec import CapabilitySpec
from distillery_trainer.dataset import build, dataset_line, manifest, render_target, task_of

Progress = Callable[[int, int, float], None]


def plan(name: str, spec: CapabilitySpec, samples: list[SampleCurated], end_offsets: dict[int, int], topic: str, tokenizer: Any) -> dict[str, Any]:
    """The dataset of a run and its identity, without training anything."""
    recipe = spec.students[name]
    run = build(samples, recipe, name)
    rows = []
    for entry in run:
        prompt = student_prompt(tokenizer, spec.units[entry.sample.unit], task_of(entry.sample))
        rows.append((entry, prompt, render_target(entry.sample, recipe.fields)))
    lines = [dataset_line(e, p, t) for e, p, t in rows]
    man = manifest(run, end_offsets, topic, recipe, lines)
    student_id = ids.content_id("student", name, recipe.model_dump(mode="json"), man["sha256"])
    return {"recipe": recipe, "rows": rows, "lines": lines, "manifest": man, "student_id": student_id}


def run(name: str, spec: CapabilitySpec, samples: list[SampleCurated], end_offsets: dict[int, int], topic: str,
        artifact_root: Path, device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """Train (or find) the student; returns the lineage record that StudentTrained carries."""
    from distillery.ml.sft import Example, save_student, train_sft

    recipe = spec.students[name]
    model, tokenizer = load_base(recipe, device)
    p = plan(name, spec, samples, end_offsets, topic, tokenizer)
    out = artifact_root / name / p["student_id"]
    lineage_path = out / "lineage.json"
    if lineage_path.is_file():
        return json.loads(lineage_path.read_text())
    if not p["rows"]:
        raise ValueError(f"student '{name}': no samples match the recipe (units {recipe.units}, pools {recipe.pools})")
    examples = [Example(prompt, target, entry.weight, entry.stage) for entry, prompt, target in p["rows"]]
    started = time.perf_counter()
    result = train_sft(
        model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=recipe.epochs,
        learning_rate=recipe.learning_rate, batch_size=recipe.batch_size, seed=recipe.seed,
        max_steps=recipe.max_steps, progress=progress,
    )
    seconds = time.perf_counter() - started
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_student(model, tokenizer, tmp / "model")
    man = {**p["manifest"], "dropped_over_max_seq_len": [p["rows"][i][0].sample.sample_id for i in result.dropped]}
    (tmp / "dataset.jsonl").write_text("\n".join(p["lines"]) + "\n")
    (tmp / "manifest.json").write_text(json.dumps(man, indent=2))
    lineage = {
        "student_id": p["student_id"], "student": name, "version": p["student_id"].split("_")[1][:12],
        "artifact_dir": str(out.resolve()), "base_model": recipe.base,
        "recipe": recipe.model_dump(mode="json"), "manifest": man, "loss_curve": result.loss_curve,
        "train_seconds": round(seconds, 2), "train_cost_usd": round(seconds * spec.economics.train_cost_per_second_usd, 6),
        "steps": result.steps, "tokens": result.tokens,
    }
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2))
    _plot_loss(result.loss_curve, tmp / "loss.png", name)
    if out.exists():  # a concurrent run of the same request won: keep its artifact
        return json.loads(lineage_path.read_text())
    tmp.rename(out)  # atomic: an artifact folder is complete or absent
    return {**lineage}


def _plot_loss(curve: list[float], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, len(curve) + 1), curve)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"student '{name}'")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
