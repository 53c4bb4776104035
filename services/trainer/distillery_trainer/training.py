"""One training run: snapshot -> recipe's dataset -> SFT (full or LoRA, optionally with logit
distillation) -> artifact with full lineage.

Idempotent: the student id is a hash of the recipe, the variant and the dataset, so a redelivered
request finds the finished artifact and re-announces it instead of training twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, SampleCurated, TokenLogprobs, Variant
from distillery.contracts.spec import CapabilitySpec, StudentSpec, UnitSpec
from distillery.domain.students import load_base, student_prompt
from distillery.domain.trajectory import closure_line, recorded_step, training_turns
from distillery_trainer.dataset import (
    build,
    dataset_line,
    manifest,
    raw_samples,
    render_target,
    samples_per_unit,
    task_of,
)

Progress = Callable[[int, int, float], None]


@dataclass
class Inputs:
    """What a run reads from one snapshot: the live curated samples and, for raw buckets and
    logit distillation, the teachers' candidates; ``offsets`` names the snapshot (topic -> ends)."""

    samples: list[SampleCurated]
    candidates: list[CandidateGenerated] = field(default_factory=list)
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)


def variant_recipe(recipe: StudentSpec, variant: Variant | None) -> StudentSpec:
    """The recipe a variant trains with: its overrides, and the pools its bucket implies."""
    if variant is None:
        return recipe
    update = dict(variant.overrides)
    if variant.bucket == "judge_filtered":
        update.update(pools=["train"], pool_mix={})
    elif variant.bucket in ("multi_teacher", "single_teacher"):
        update.update(pools=["train"], pool_mix={}, pathways=["answer"], real_share=None)
    try:
        return StudentSpec.model_validate({**recipe.model_dump(), **update})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"variant '{variant.name}': field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def variant_samples(spec: CapabilitySpec, recipe: StudentSpec, variant: Variant | None, inputs: Inputs) -> list[SampleCurated]:
    """Curated samples, or (raw buckets) every teacher answer as naive distillation would use it."""
    if variant is None or variant.bucket in ("curated", "judge_filtered"):
        return inputs.samples
    teachers = {}
    for unit in recipe.units:
        routed = spec.units[unit].routing.all_teachers()
        teachers[unit] = set(routed[:1] if variant.bucket == "single_teacher" else routed)
    return raw_samples(inputs.candidates, recipe.units, teachers)


def teacher_tokens(recipe: StudentSpec, candidates: list[CandidateGenerated], fingerprint: str) -> dict[str, TokenLogprobs]:
    """The distill teacher's cached distributions by candidate id; a tokenizer mismatch is an
    error before any training starts (the ids would mean different tokens to the student)."""
    if recipe.distill is None:
        return {}
    cached = {c.candidate_id: c.logprobs for c in candidates
              if c.teacher_id == recipe.distill.teacher and c.logprobs is not None}
    foreign = sorted({lp.tokenizer for lp in cached.values()} - {fingerprint})
    if foreign:
        raise ValueError(f"logit distillation: teacher '{recipe.distill.teacher}' cached logprobs with tokenizer "
                         f"{foreign}, the student's tokenizer is {fingerprint}: tokenizer mismatch")
    if not cached:
        raise ValueError(f"logit distillation: teacher '{recipe.distill.teacher}' has no cached logprobs in the "
                         "snapshot (set its logprobs and let it answer the tasks)")
    return cached


def plan(name: str, spec: CapabilitySpec, inputs: Inputs, topic: str, tokenizer: Any,
         variant: Variant | None = None) -> dict[str, Any]:
    """The dataset of a run and its identity, without training anything."""
    base = spec.students[name]
    recipe = variant_recipe(base, variant)
    cap = samples_per_unit(build(inputs.samples, base, name)) if variant is not None and variant.match else None
    run = build(variant_samples(spec, recipe, variant, inputs), recipe, name, cap)
    rows = [(entry, prompt, target) for entry in run
            for prompt, target in student_turns(tokenizer, spec.units[entry.sample.unit], entry.sample, recipe.fields)]
    lines = [dataset_line(e, p, t) for e, p, t in rows]
    end_offsets = inputs.offsets.get(topic, {})
    man = manifest(run, end_offsets, topic, recipe, lines)
    man["examples"] = len(rows)  # a tool trajectory teaches one example per turn
    man["snapshot"] = {t: {str(p): o for p, o in sorted(ends.items())} for t, ends in sorted(inputs.offsets.items())}
    identity = variant.model_dump(mode="json", exclude={"experiment_id", "members"}) if variant else None
    student_id = ids.content_id("student", name, recipe.model_dump(mode="json"), man["sha256"], identity)
    return {"recipe": recipe, "rows": rows, "lines": lines, "manifest": man, "student_id": student_id}


def is_trajectory(sample: SampleCurated) -> bool:
    """A sample that teaches the act-observe loop turn by turn (one with no steps has no turns)."""
    return sample.pathway == "tool_trajectory" and bool(sample.tool_steps)


def student_turns(tokenizer: Any, unit: UnitSpec, sample: SampleCurated, fields: list[str]) -> list[tuple[str, str]]:
    """(prompt, target) pairs a sample teaches: one per turn of a tool trajectory, prompted exactly
    as the loop prompts that turn (the student acts in the teacher's loop), else the one answer."""
    from distillery.domain.generate import render_chat

    task = task_of(sample)
    if not is_trajectory(sample):
        return [(student_prompt(tokenizer, unit, task), render_target(sample, fields))]
    steps = [recorded_step(entry) for entry in sample.tool_steps]
    return [(render_chat(tokenizer, system, user), target)
            for system, user, target in training_turns(unit, task, steps, closure_line(sample.final), compact=True)]


def examples_of(p: dict[str, Any], recipe: StudentSpec, inputs: Inputs, tokenizer: Any) -> list:
    """Training examples, one per row of the plan; with logit distillation, the distill teacher's
    samples carry its tokens (not a trajectory's turns: its cached tokens are of no single turn)."""
    from distillery.domain.models import tokenizer_fingerprint
    from distillery_trainer.kd import TeacherTokens
    from distillery_trainer.sft import Example

    cached = teacher_tokens(recipe, inputs.candidates, tokenizer_fingerprint(tokenizer))
    examples = []
    for entry, prompt, target in p["rows"]:
        lp = None if is_trajectory(entry.sample) else cached.get(entry.sample.provenance.candidate_id)
        teacher = TeacherTokens(lp.token_ids, [list(zip(t.ids, t.logprobs)) for t in lp.top]) if lp else None
        examples.append(Example(prompt, target, entry.weight, entry.stage, teacher=teacher, unit=entry.sample.unit))
    return examples


def run(name: str, spec: CapabilitySpec, inputs: Inputs, topic: str, artifact_root: Path, device: str = "cpu",
        progress: Progress | None = None, variant: Variant | None = None) -> dict[str, Any]:
    """Train (or find) the student; returns the lineage record that StudentTrained carries."""
    from distillery_trainer.sft import LoraOptions, save_student, train_sft

    model, tokenizer = load_base(variant_recipe(spec.students[name], variant), device)  # a seed variant: its own init
    p = plan(name, spec, inputs, topic, tokenizer, variant)
    recipe: StudentSpec = p["recipe"]
    out = artifact_root / name / p["student_id"]
    lineage_path = out / "lineage.json"
    if lineage_path.is_file():
        return json.loads(lineage_path.read_text())
    examples = examples_of(p, recipe, inputs, tokenizer)
    started = time.perf_counter()
    result = train_sft(
        model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=recipe.epochs,
        learning_rate=recipe.learning_rate, batch_size=recipe.batch_size, seed=recipe.seed,
        max_steps=recipe.max_steps, progress=progress, method=recipe.method,
        lora=LoraOptions(**recipe.lora.model_dump()) if recipe.method == "lora" else None,
        kd_weight=recipe.distill.weight if recipe.distill else 0.0,
        kd_temperature=recipe.distill.temperature if recipe.distill else 1.0,
    )
    seconds = time.perf_counter() - started
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_student(model, tokenizer, tmp / "model")
    man = {**p["manifest"], "dropped_over_max_seq_len": [p["rows"][i][0].sample.sample_id for i in result.dropped],
           "kd_examples": result.kd_examples,
           # what a run costs: prompt and target lengths per unit (prefill dominates on CPU)
           "tokens_per_unit": result.prompt_tokens_per_unit}
    (tmp / "dataset.jsonl").write_text("\n".join(p["lines"]) + "\n")
    (tmp / "manifest.json").write_text(json.dumps(man, indent=2))
    lineage = {
        "student_id": p["student_id"], "student": name, "version": p["student_id"].split("_")[1][:12],
        "artifact_dir": str(out.resolve()), "base_model": recipe.base,
        "recipe": recipe.model_dump(mode="json"), "manifest": man, "loss_curve": result.loss_curve,
        "train_seconds": round(seconds, 2), "train_cost_usd": round(seconds * spec.economics.train_cost_per_second_usd, 6),
        "steps": result.steps, "tokens": result.tokens, "padded_tokens": result.padded_tokens, "method": result.method,
        "trainable_params": result.trainable_params, "total_params": result.total_params,
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
