"""Attribution: variants of one recipe, trained from the same snapshot, compared on the same tasks.

Each variant ran with several seeds; every run scored the same held-out tasks. The table gives,
per unit and variant, the mean accuracy over seeds, the difference against the ``full`` recipe,
and a 95% interval from a paired two-level bootstrap: tasks are resampled once per draw and
shared by both arms (the comparison is paired by task), seeds are resampled within each arm
(so seed-to-seed spread widens the interval, as it should with few seeds).
"""

from __future__ import annotations

import random
from collections import defaultdict
from statistics import mean

from distillery.contracts.events import EvaluationCompleted

REFERENCE = "full"


def _runs(members: list[EvaluationCompleted]) -> dict[str, list[EvaluationCompleted]]:
    runs: dict[str, list[EvaluationCompleted]] = defaultdict(list)
    for m in members:
        if m.variant is not None:
            runs[m.variant.name].append(m)
    return runs


def _accuracy(runs: list[EvaluationCompleted], tasks: list[str]) -> float:
    """Mean over runs (seeds) of each run's accuracy on ``tasks`` (a task may repeat)."""
    return mean(mean(float(r.correct.get(t, False)) for t in tasks) for r in runs)


def _interval(variant: list[EvaluationCompleted], full: list[EvaluationCompleted], tasks: list[str],
              draws: int, rng: random.Random) -> tuple[float, float]:
    diffs = []
    for _ in range(draws):
        sample = rng.choices(tasks, k=len(tasks))
        diffs.append(_accuracy(rng.choices(variant, k=len(variant)), sample)
                     - _accuracy(rng.choices(full, k=len(full)), sample))
    diffs.sort()
    return diffs[int(0.025 * (draws - 1))], diffs[int(0.975 * (draws - 1))]


def table(members: list[EvaluationCompleted], task_units: dict[str, str], draws: int = 2000,
          seed: int = 0) -> list[dict]:
    """Rows {unit, variant, accuracy, diff, ci_low, ci_high, n_seeds, samples}; unit ``all`` pools the units."""
    runs = _runs(members)
    if REFERENCE not in runs:
        raise ValueError(f"an attribution experiment needs a '{REFERENCE}' variant (have {sorted(runs)})")
    by_unit: dict[str, list[str]] = defaultdict(list)
    for task_id, unit in sorted(task_units.items()):
        by_unit[unit].append(task_id)
    by_unit["all"] = sorted(task_units)
    rng = random.Random(seed)
    rows = []
    for unit, tasks in by_unit.items():
        if not tasks:
            continue
        full_acc = _accuracy(runs[REFERENCE], tasks)
        for name in [REFERENCE, *sorted(n for n in runs if n != REFERENCE)]:
            acc = _accuracy(runs[name], tasks)
            low, high = (0.0, 0.0) if name == REFERENCE else _interval(runs[name], runs[REFERENCE], tasks, draws, rng)
            rows.append({"unit": unit, "variant": name, "accuracy": round(acc, 4), "diff": round(acc - full_acc, 4),
                         "ci_low": round(low, 4), "ci_high": round(high, 4), "n_seeds": len(runs[name]),
                         "samples": round(mean(r.samples for r in runs[name]))})
    return rows


def complete(members: list[EvaluationCompleted], expected: int) -> bool:
    """All runs of the experiment are evaluated (a redelivered evaluation counts once)."""
    return len({m.student_id + (m.variant.name if m.variant else "") for m in members}) >= expected
