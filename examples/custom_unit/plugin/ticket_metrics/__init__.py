"""A team's own metric and checker for the support-ticket unit (examples/custom_unit/README.md).

A metric receives one subject's scored answers to one unit's held-out tasks: objects with
``task`` (the task, its reference under ``task.reference.fields``), ``text`` (the answer),
``result`` (what the unit's checker found: ``correct``, ``reasons``, ``fields``) and ``missing``
(no answer came). It returns a float, or a dict of named floats (one report row each).

A checker is ``fn(text, task, **params)`` and returns True/False (or Distillery's CheckResult).
"""

from __future__ import annotations

import json
import re


def _category(text: str) -> str | None:
    """The ``category`` field of the first JSON object in the answer."""
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    try:
        value = json.loads(match.group()) if match else None
    except json.JSONDecodeError:
        return None
    category = value.get("category") if isinstance(value, dict) else None
    return category.strip().lower() if isinstance(category, str) else None


def category_macro_f1(scored) -> float:
    """Macro-averaged F1 of the ticket category: every category counts alike, however rare."""
    pairs = [((s.task.reference.fields or {}).get("category", "").lower(), None if s.missing else _category(s.text))
             for s in scored if s.task.reference is not None]
    labels = sorted({want for want, _ in pairs if want})
    if not labels:
        return 0.0
    f1s = []
    for label in labels:
        tp = sum(want == label and got == label for want, got in pairs)
        fp = sum(want != label and got == label for want, got in pairs)
        fn = sum(want == label and got != label for want, got in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return round(sum(f1s) / len(f1s), 4)


def category_only(text: str, task, labels=("billing", "shipping", "technical", "account")) -> bool:
    """A checker that only looks at the category (a unit may name it as ``ticket_metrics:category_only``)."""
    want = (task.reference.fields or {}).get("category", "")
    return _category(text) == str(want).lower() and want in labels


category_only.reference = "fields"  # only called on tasks whose reference has fields
