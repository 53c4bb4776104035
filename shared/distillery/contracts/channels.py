"""Every topic name lives here; no service spells a topic itself (ARCHITECTURE §2)."""

from __future__ import annotations

from dataclasses import dataclass

# Partition counts. Judge and editor inputs get at least 4 so they can scale out;
# everything about one task is keyed by task_id, so one partition holds all of it.
PARTITIONS = {
    "tasks": 4,
    "generation.requests": 4,
    "candidates": 4,
    "verdicts": 4,
    "regeneration": 4,
    "samples": 4,
    "reviews": 4,
    "training.requests": 1,
    "students": 1,
    "evaluations": 1,
    "dlq": 1,
}


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (default ``distill``; tests use their own)."""

    prefix: str = "distill"

    def _name(self, stem: str) -> str:
        return f"{self.prefix}.{stem}.v1"

    @property
    def tasks(self) -> str:
        return self._name("tasks")

    def generation_requests(self, teacher_id: str) -> str:
        return self._name(f"generation.requests.{teacher_id}")

    @property
    def candidates(self) -> str:
        return self._name("candidates")

    @property
    def verdicts(self) -> str:
        return self._name("verdicts")

    @property
    def regeneration(self) -> str:
        return self._name("regeneration")

    @property
    def samples(self) -> str:
        return self._name("samples")

    @property
    def reviews(self) -> str:
        """Human decisions on the review pool (keyed by task)."""
        return self._name("reviews")

    @property
    def training_requests(self) -> str:
        return self._name("training.requests")

    @property
    def students(self) -> str:
        return self._name("students")

    @property
    def evaluations(self) -> str:
        return self._name("evaluations")

    @property
    def dlq(self) -> str:
        return self._name("dlq")

    def all_topics(self, teacher_ids: list[str]) -> dict[str, int]:
        """Every topic of a deployment with its partition count."""
        topics = {
            self.tasks: PARTITIONS["tasks"],
            self.candidates: PARTITIONS["candidates"],
            self.verdicts: PARTITIONS["verdicts"],
            self.regeneration: PARTITIONS["regeneration"],
            self.samples: PARTITIONS["samples"],
            self.reviews: PARTITIONS["reviews"],
            self.training_requests: PARTITIONS["training.requests"],
            self.students: PARTITIONS["students"],
            self.evaluations: PARTITIONS["evaluations"],
            self.dlq: PARTITIONS["dlq"],
        }
        for teacher_id in teacher_ids:
            topics[self.generation_requests(teacher_id)] = PARTITIONS["generation.requests"]
        return topics
