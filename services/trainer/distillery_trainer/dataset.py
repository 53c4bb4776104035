"""Dataset snapshots as plain functions: samples in, a recipe's training set and manifest out."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from distillery.events import SampleCurated, SampleEvent, SampleRetracted, Task, live_samples
from distillery.spec import StudentSpec


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


def render_target(sample: SampleCurated, fields: list[str]) -> str:
    """What the student learns to write: the recipe's fields in a fixed order."""
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
    selected: list[SampleCurated],
    end_offsets: dict[int, int],
    topic: str,
    recipe: StudentSpec,
    dataset_lines: list[str],
) -> dict[str, Any]:
    """Lineage of a snapshot: offsets, judge versions, counts, and a sha256 of the exact data."""
    sha = hashlib.sha256("\n".join(dataset_lines).encode()).hexdigest()
    return {
        "topic": topic,
        "end_offsets": {str(p): o for p, o in sorted(end_offsets.items())},
        "judge_versions": sorted({s.provenance.judge_version for s in selected}),
        "samples": len(selected),
        "per_pool": dict(Counter(s.pool for s in selected)),
        "per_unit": dict(Counter(s.unit for s in selected)),
        "per_pathway": dict(Counter(s.pathway for s in selected)),
        "task_ids": sorted({s.provenance.task_id for s in selected}),
        "sample_ids": sorted(s.sample_id for s in selected),
        "sha256": sha,
        "recipe": recipe.model_dump(mode="json"),
    }


def dataset_line(sample: SampleCurated, prompt: str, target: str) -> str:
    return json.dumps(
        {"sample_id": sample.sample_id, "unit": sample.unit, "pool": sample.pool, "pathway": sample.pathway,
         "prompt": prompt, "target": target, "weight": sample.weight},
        ensure_ascii=False, sort_keys=True,
    )
