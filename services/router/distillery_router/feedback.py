"""What the router learns from the judge: acceptance and cost per teacher and unit.

The ``value`` strategy picks, per task, the teacher with the best *sampled* acceptance
per dollar: each teacher's acceptance rate is drawn from its Beta posterior (Thompson
sampling), so a teacher with little evidence still gets tried, and a clearly worse one
fades out as evidence piles up. The table is rebuilt from the verdicts topic on start.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from distillery.contracts.events import ACCEPTED_POOLS, CandidatesJudged


@dataclass
class Stats:
    accepted: int = 0
    judged: int = 0
    cost_usd: float = 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.judged if self.judged else 0.0

    @property
    def cost_per_candidate(self) -> float:
        return self.cost_usd / self.judged if self.judged else 0.0

    @property
    def cost_per_accepted(self) -> float:
        return self.cost_usd / self.accepted if self.accepted else float("inf")


class ValueTable:
    def __init__(self) -> None:
        self.stats: dict[tuple[str, str], Stats] = defaultdict(Stats)
        self.seen: set[str] = set()

    def learn(self, verdict: CandidatesJudged) -> None:
        """Count a verdict once (redeliveries and replays of the same verdict id are ignored)."""
        if verdict.verdict_id in self.seen:
            return
        self.seen.add(verdict.verdict_id)
        for jc in verdict.candidates:
            stats = self.stats[(verdict.task.unit, jc.teacher_id)]
            stats.judged += 1
            stats.accepted += jc.pool in ACCEPTED_POOLS
            stats.cost_usd += jc.cost_usd

    def choose(self, unit: str, teachers: list[str], rng: random.Random, fallback_cost: dict[str, float]) -> tuple[str, float]:
        """The teacher with the best sampled acceptance per cost, and that score.

        ``fallback_cost`` (from the price table) stands in for a teacher never judged yet.
        """
        best, best_score = teachers[0], -1.0
        for teacher in teachers:
            stats = self.stats[(unit, teacher)]
            sampled = rng.betavariate(1 + stats.accepted, 1 + stats.judged - stats.accepted)
            cost = stats.cost_per_candidate if stats.judged else fallback_cost.get(teacher, 0.0)
            score = sampled / max(cost, 1e-9)
            if score > best_score:
                best, best_score = teacher, score
        return best, best_score
