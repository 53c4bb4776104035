"""Prometheus counting on the hot paths.

``metric.labels(*values)`` checks and converts every value and takes a lock on each call, and
``inc`` takes another: at some forty labelled increments a task they cost the services about
0.2 ms of CPU a task, more than a replay teacher's whole answer (bench/hot_path.py). So a batch
handler adds each label set's count once (:func:`count_by`, :func:`sum_by`), and a per-event
handler keeps the labelled child it already made (:func:`child`). The exported values are the
same; they are only added in fewer steps.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

# (metric, label values) -> the labelled child. Label values are bounded by design (units,
# teachers, pools, topics), so the cache is too. The metric itself is the key, not its id: a
# metric a test dropped stays referenced, so its id is never reused for another's children.
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, made once per label set."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def count_by(metric: Any, keys: Iterable[tuple[str, ...]]) -> None:
    """Increment ``metric`` once per key, as one ``inc(n)`` per distinct label set."""
    for labels, n in Counter(keys).items():
        child(metric, *labels).inc(n)


def sum_by(metric: Any, amounts: Iterable[tuple[tuple[str, ...], float]]) -> None:
    """Add each amount to ``metric`` under its label set, as one ``inc`` per distinct label set."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, amount in amounts:
        totals[labels] += amount
    for labels, total in totals.items():
        child(metric, *labels).inc(total)
