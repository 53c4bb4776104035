"""Sampling that keeps a distribution honest: every cluster represented, hard cases upsampled.

The editor uses it for representative views of the repository; the trainer for a recipe's pool mix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from itertools import zip_longest
from operator import attrgetter
from typing import TypeVar

T = TypeVar("T")


_NONE = object()  # a cluster that has run out of items, in a round


def representative(
    items: Iterable[T],
    budget: int,
    *,
    cluster_of: Callable[[T], Hashable | None] = attrgetter("cluster"),
    weight_of: Callable[[T], float] = attrgetter("weight"),
    id_of: Callable[[T], str] = attrgetter("sample_id"),
) -> list[T]:
    """Up to ``budget`` items, round-robin across clusters: every cluster gives one item before any
    gives a second. Within a cluster, the largest weight first (hard cases), ties by smallest id.

    Clusters are visited in order of their id (items without a cluster form one group, visited
    last), so the choice is deterministic; under a budget smaller than the number of clusters,
    the first clusters in that order are the ones represented.
    """
    groups: dict[Hashable | None, list[T]] = {}
    for item in items:
        groups.setdefault(cluster_of(item), []).append(item)
    order = sorted(groups, key=lambda c: (c is None, str(c)))
    queues = [sorted(groups[c], key=lambda it: (-weight_of(it), id_of(it))) for c in order]
    rounds = (item for round_ in zip_longest(*queues, fillvalue=_NONE) for item in round_ if item is not _NONE)
    return [item for _, item in zip(range(max(budget, 0)), rounds)]


def upsampled(items: Iterable[T], weight_of: Callable[[T], float] = attrgetter("weight")) -> list[T]:
    """Each item repeated about ``weight`` times (hard-case upsampling), deterministically.

    Fractional weights carry over from item to item (error diffusion), so the total number of
    copies is the rounded-down sum of the weights and no item is ever more than one copy off
    its weight. Weight 0 drops the item.
    """
    out: list[T] = []
    carried = 0.0
    for item in items:
        carried += max(weight_of(item), 0.0)
        copies = math.floor(carried + 1e-9)
        out.extend([item] * copies)
        carried -= copies
    return out
