"""Dataset snapshots as plain functions: samples in, a recipe's training set and manifest out."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidateGenerated,
    Provenance,
    SampleCurated,
    SampleEvent,
    SampleRetracted,
    Task,
    live_samples,
)
from distillery.contracts.spec import StudentSpec
from distillery.domain.sampling import representative, upsampled

# Curriculum order: the plain answer first, then the steps, the style, the tool trajectories.
PATHWAY_ORDER = ("answer", "process", "style", "tool_trajectory")


@dataclass(frozen=True)
class Entry:
    """One training example of a run: the sample, its loss weight, and its curriculum stage."""

    sample: SampleCurated
    weight: float
    stage: int


def repository(events: list[SampleEvent]) -> tuple[list[SampleCurated], int]:
    """The samples live at the snapshot (retracted ones never reach a dataset) and how many retractions it saw."""
    return live_samples(events), sum(isinstance(event, SampleRetracted) for event in events)


def select(samples: list[SampleCurated], recipe: StudentSpec) -> list[SampleCurated]:
    """The recipe's units, pathways and pools; one copy per sample id; stable order."""
    by_id: dict[str, SampleCurated] = {}
    for s in samples:
        if s.unit in recipe.units and s.pathway in recipe.pathways and s.pool in recipe.pools:
            by_id.setdefault(s.sample_id, s)
    return [by_id[k] for k in sorted(by_id)]


def missing_units(selected: list[SampleCurated], recipe: StudentSpec) -> list[str]:
    have = {s.unit for s in selected}
    return [unit for unit in recipe.units if unit not in have]


def mix_pools(selected: list[SampleCurated], recipe: StudentSpec) -> list[SampleCurated]:
    """The recipe's pool mix: the largest dataset whose pools have the declared shares without
    repeating a sample; within a pool, samples are picked round-robin across clusters."""
    if not recipe.pool_mix:
        return selected
    by_pool = {pool: [s for s in selected if s.pool == pool] for pool in recipe.pool_mix}
    total = min(math.floor(len(by_pool[pool]) / share + 1e-9) for pool, share in recipe.pool_mix.items())
    chosen = [s for pool, share in recipe.pool_mix.items()
              for s in representative(by_pool[pool], math.floor(total * share + 1e-9))]
    return sorted(chosen, key=lambda s: s.sample_id)


def seeded_order(samples: list[SampleCurated], seed: int) -> list[SampleCurated]:
    """A deterministic shuffle: the same seed picks the same subset on every redelivery."""
    return sorted(samples, key=lambda s: ids.content_id("pick", seed, s.sample_id))


def mix_real(selected: list[SampleCurated], recipe: StudentSpec) -> list[SampleCurated]:
    """Imported real samples at the recipe's ``real_share`` of the dataset (0: none of them).

    Like the pool mix, the largest dataset with that share, no sample repeated."""
    if recipe.real_share is None:
        return selected
    real = seeded_order([s for s in selected if s.origin == "real"], recipe.seed)
    distilled = [s for s in selected if s.origin != "real"]
    if recipe.real_share == 0:
        return distilled
    if not real:
        raise ValueError(f"the recipe asks for real_share {recipe.real_share} but the snapshot has no real samples "
                         "(add them with 'distillery samples import')")
    share = recipe.real_share
    total = min(math.floor(len(real) / share + 1e-9), math.floor(len(distilled) / (1 - share) + 1e-9))
    n_real = math.floor(total * share + 1e-9)
    chosen = real[:n_real] + seeded_order(distilled, recipe.seed)[: total - n_real]
    return sorted(chosen, key=lambda s: s.sample_id)


def cap_per_unit(selected: list[SampleCurated], counts: dict[str, int], seed: int) -> list[SampleCurated]:
    """At most ``counts[unit]`` samples of each unit (attribution runs compare at equal sample counts)."""
    kept: list[SampleCurated] = []
    for unit in sorted({s.unit for s in selected}):
        kept += seeded_order([s for s in selected if s.unit == unit], seed)[: counts.get(unit, 0)]
    return sorted(kept, key=lambda s: s.sample_id)


def raw_samples(candidates: list[CandidateGenerated], units: list[str], teachers: dict[str, set[str]]) -> list[SampleCurated]:
    """Naive distillation's data: every teacher answer to a training task, unjudged and unedited.

    ``teachers`` maps a unit to the teachers whose answers count. The answer text becomes the
    ``final`` as is (no rationale, no limits, no boundary samples); failed generations have no text."""
    out: dict[str, SampleCurated] = {}
    for c in candidates:
        unit = c.task.unit
        if c.task.split != "train" or unit not in units or c.teacher_id not in teachers.get(unit, set()) or not c.text:
            continue
        sample_id = ids.content_id("raw", c.candidate_id)
        out[sample_id] = SampleCurated(
            sample_id=sample_id, unit=unit, pathway="answer", pool="train", prompt=c.task.prompt, final=c.text,
            tools=c.task.tools, content_hash=ids.content_id("rawtext", unit, c.task.prompt, c.text),
            provenance=Provenance(task_id=c.task.task_id, candidate_id=c.candidate_id, teacher_id=c.teacher_id,
                                  judge_version="unjudged", verdict_id=""),
            tier="high", produced_by="trainer@raw",
        )
    return [out[k] for k in sorted(out)]


def tier_weight(sample: SampleCurated, recipe: StudentSpec) -> float:
    """The sample's own weight (hard cases weigh more) times the recipe's factor for its tier."""
    return sample.weight * recipe.tier_weights.get(sample.tier, 1.0)


def entries(selected: list[SampleCurated], recipe: StudentSpec) -> list[Entry]:
    """Weights as loss weights, or as repeats (sampling weighting); stages when a curriculum is declared."""
    def stage(sample: SampleCurated) -> int:
        return PATHWAY_ORDER.index(sample.pathway) if recipe.curriculum else 0

    if recipe.weighting == "sampling":
        repeated = upsampled(selected, lambda s: tier_weight(s, recipe))
        out = [Entry(s, 1.0, stage(s)) for s in repeated]
    else:
        out = [Entry(s, tier_weight(s, recipe), stage(s)) for s in selected]
    return sorted(out, key=lambda e: e.stage)  # stable: sample id order within a stage


def build(samples: list[SampleCurated], recipe: StudentSpec, student: str,
          cap: dict[str, int] | None = None) -> list[Entry]:
    """The run's examples, or a clear error before any training starts.

    ``cap``: at most this many samples per unit (an attribution run matched to the full recipe)."""
    selected = select(samples, recipe)
    missing = missing_units(selected, recipe)
    if missing and (recipe.require_every_unit or not selected):
        raise ValueError(f"student '{student}': the snapshot has no samples for unit(s) {missing} "
                         f"(pools {recipe.pools}, pathways {recipe.pathways})")
    mixed = mix_real(mix_pools(selected, recipe), recipe)
    if recipe.max_samples_per_unit is not None:
        mixed = cap_per_unit(mixed, recipe.sample_caps(), recipe.seed)
    if cap is not None:
        mixed = cap_per_unit(mixed, cap, recipe.seed)
    return entries(mixed, recipe)


def samples_per_unit(run: list[Entry]) -> dict[str, int]:
    """Distinct samples per unit in a run (repeats from sampling weights count once)."""
    return dict(Counter(s.unit for s in {e.sample.sample_id: e.sample for e in run}.values()))


def render_target(sample: SampleCurated, fields: list[str]) -> str:
    """What the student learns to write: the recipe's fields in a fixed order.

    A contrastive sample teaches its correction: the wrong answer (``contrast``) and the reason
    (``limits``) explain it to people and to pairwise methods, they are not what to answer.
    """
    if sample.pool == "contrastive":
        return sample.final
    parts = []
    if "rationale" in fields and sample.rationale:
        parts.append(sample.rationale)
    if "limits" in fields and sample.limits:
        parts.append(sample.limits)
    parts.append(sample.final)
    return "\n".join(parts)


def task_of(sample: SampleCurated) -> Task:
    """The task a sample came from, as far as the student's prompt needs it."""
    return Task(task_id=sample.provenance.task_id, unit=sample.unit, prompt=sample.prompt, tools=sample.tools)


def manifest(
    run: list[Entry],
    end_offsets: dict[int, int],
    topic: str,
    recipe: StudentSpec,
    dataset_lines: list[str],
) -> dict[str, Any]:
    """Lineage of a snapshot: offsets, judge versions, counts, and a sha256 of the exact data."""
    sha = hashlib.sha256("\n".join(dataset_lines).encode()).hexdigest()
    selected = list({e.sample.sample_id: e.sample for e in run}.values())
    return {
        "topic": topic,
        "end_offsets": {str(p): o for p, o in sorted(end_offsets.items())},
        "judge_versions": sorted({s.provenance.judge_version for s in selected}),
        "samples": len(selected),
        "examples": len(run),  # with sampling weighting, samples repeat
        "per_pool": dict(Counter(s.pool for s in selected)),
        "per_unit": dict(Counter(s.unit for s in selected)),
        "per_pathway": dict(Counter(s.pathway for s in selected)),
        "per_tier": dict(Counter(s.tier for s in selected)),
        "per_origin": dict(Counter(s.origin for s in selected)),
        "real_per_unit": dict(Counter(s.unit for s in selected if s.origin == "real")),
        "task_ids": sorted({s.provenance.task_id for s in selected}),
        "sample_ids": sorted(s.sample_id for s in selected),
        "sha256": sha,
        "recipe": recipe.model_dump(mode="json"),
    }


def dataset_line(entry: Entry, prompt: str, target: str) -> str:
    sample = entry.sample
    return json.dumps(
        {"sample_id": sample.sample_id, "unit": sample.unit, "pool": sample.pool, "pathway": sample.pathway,
         "tier": sample.tier, "prompt": prompt, "target": target, "weight": entry.weight, "stage": entry.stage},
        ensure_ascii=False, sort_keys=True,
    )
