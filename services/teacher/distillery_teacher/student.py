"""``backend: student``: a teacher deployment that serves a student recipe's promoted artifact.

The closed loop (docs/evaluator.md "Promotion in shadow") sends a share of a promoted unit's live
tasks here, tagged ``shadow``. The deployment follows the promotions topic from the start and
serves the latest artifact promoted for its student that is still in force (one artifact per
deployment; a demotion of that student moves it back to the one before, or to none). The student
sees the prompt it was trained on (the unit's bare ``system_prompt``), not the teachers'.

A promoted artifact whose files are missing makes the deployment not ready, with the reason, and
every request it gets fails as a candidate with that error: the judge pools it ``failure``, and
the teachers answer the task as always.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from distillery.contracts.events import LoopDecided
from distillery.contracts.spec import CapabilitySpec
from distillery.domain.generate import Generation
from distillery.domain.loop import serving

WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")


def artifact_problem(artifact_dir: str) -> str | None:
    """Why a trained student's artifact cannot be served (None: it can)."""
    model = Path(artifact_dir) / "model"
    if not (model / "config.json").is_file() and not (model / "adapter_config.json").is_file():
        return f"missing {model / 'config.json'}"
    if not any((model / name).is_file() for name in WEIGHTS):
        return f"no weights in {model} (looked for {', '.join(WEIGHTS)})"
    return None


class ServedStudent:
    """The student backend: prompts in, the promoted student's generations out."""

    def __init__(self, spec: CapabilitySpec, student: str, device: str = "cpu") -> None:
        self.student = student
        self.recipe = spec.students[student]
        self.device = device
        self.decisions: dict[str, LoopDecided] = {}
        self._loaded: tuple[str, Any] | None = None  # (student id, generator)
        self._lock = threading.Lock()

    def follow(self, decision: LoopDecided) -> None:
        if decision.student == self.student:
            self.decisions.setdefault(decision.decision_id, decision)

    def current(self) -> LoopDecided | None:
        """The latest promotion of this student still in force (any unit)."""
        promoted = [d for (student, _), d in serving(list(self.decisions.values())).items() if student == self.student]
        return max(promoted, key=lambda d: d.produced_at, default=None)

    def not_ready(self) -> str | None:
        current = self.current()
        if current is None:
            return None  # nothing promoted yet: nothing to serve, nothing broken
        problem = artifact_problem(current.artifact_dir)
        return f"student '{self.student}': promoted artifact {current.student_id}: {problem}" if problem else None

    async def is_ready(self) -> bool | str:
        return self.not_ready() or True

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        from distillery.domain.generate import render_chat

        generator = self._generator()
        prompts = [render_chat(generator.tokenizer, system, user) for _, system, user in requests]
        return generator.generate(prompts, max_new_tokens=min(max_new_tokens, self.recipe.max_new_tokens),
                                  batch_size=self.recipe.batch_size)

    def _generator(self) -> Any:
        from distillery.domain.generate import Generator
        from distillery.domain.models import load_model

        current = self.current()
        if current is None:
            raise LookupError(f"student '{self.student}' has no promoted artifact")
        problem = artifact_problem(current.artifact_dir)
        if problem:
            raise FileNotFoundError(f"promoted artifact {current.student_id}: {problem}")
        with self._lock:
            if self._loaded is None or self._loaded[0] != current.student_id:
                model, tokenizer = load_model(str(Path(current.artifact_dir) / "model"), device=self.device)
                model.eval()
                self._loaded = (current.student_id, Generator(model, tokenizer, device=self.device))
            return self._loaded[1]
