"""What the router learns from the judge: acceptance and cost per teacher and unit.

The ``value`` strategy picks, per task, the teacher with the best *sampled* acceptance
per dollar: each teacher's acceptance rate is drawn from its Beta posterior (Thompson
sampling), so a teacher with little evidence still gets tried, and a clearly worse one
fades out as evidence piles up. The table is rebuilt from the verdicts topic on start, and
counts each candidate once, by its latest verdict, so a judge replay does not count it twice.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

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


@dataclass(frozen=True)
class Judgment:
    """What one verdict said of one candidate: the part of the table it accounts for."""

    unit: str
    teacher_id: str
    accepted: bool
    cost_usd: float
    at: datetime


class ValueTable:
    """Acceptance and cost per (unit, teacher), counting every candidate once: its latest judgment.

    A judge replay re-judges the same candidates under a new version; its verdicts replace what the
    old ones said rather than adding to it. A redelivered or older verdict changes nothing."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str], Stats] = defaultdict(Stats)
        self.judgments: dict[str, Judgment] = {}  # candidate id -> the judgment it is counted by

    def learn(self, verdict: CandidatesJudged) -> None:
        if verdict.shadow:  # a promoted student's live answer is not a teacher's
            return
        for jc in verdict.candidates:
            previous = self.judgments.get(jc.candidate_id)
            if previous is not None and previous.at >= verdict.produced_at:
                continue
            if previous is not None:
                self._count(previous, -1)
            judgment = Judgment(verdict.task.unit, jc.teacher_id, jc.pool in ACCEPTED_POOLS, jc.cost_usd,
                                verdict.produced_at)
            self._count(judgment, +1)
            self.judgments[jc.candidate_id] = judgment

    def _count(self, judgment: Judgment, sign: int) -> None:
        stats = self.stats[(judgment.unit, judgment.teacher_id)]
        stats.judged += sign
        stats.accepted += sign * judgment.accepted
        stats.cost_usd += sign * judgment.cost_usd

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
