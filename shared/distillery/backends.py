"""Model backends behind one small interface: prompts in, generations out.

``transformers`` runs the model in-process (CPU or GPU, batched); ``replay``
serves recorded outputs keyed by task for reproducible runs and tests; ``openai``
(:mod:`distillery.openai_backend`) talks to any OpenAI-compatible server. Teachers
generate with them, and the judge's model scorer asks its rubric through them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Protocol

from distillery.ml.generate import Generation
from distillery.settings import ConfigError
from distillery.spec import TeacherSpec


class Backend(Protocol):
    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        """``requests`` are (task_id, system, user) triples; one Generation each, in order."""


class TransformersBackend:
    """Batched generation with a local transformers model (loaded once, on first use)."""

    def __init__(self, model_name: str, batch_size: int, temperature: float, device: str = "cpu",
                 stop: list[str] | None = None, top_logprobs: int = 0) -> None:
        self.model_name = model_name
        self.top_logprobs = top_logprobs
        self.stop = stop or []
        self.batch_size = batch_size
        self.temperature = temperature
        self.device = device
        self._generator = None
        self._lock = threading.Lock()

    def load(self) -> None:
        from distillery.ml.generate import Generator
        from distillery.ml.models import load_model

        with self._lock:
            if self._generator is None:
                model, tokenizer = load_model(self.model_name, device=self.device)
                self._generator = Generator(model, tokenizer, device=self.device)

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        from distillery.ml.generate import render_chat

        self.load()
        tokenizer = self._generator.tokenizer
        prompts = [render_chat(tokenizer, system, user) for _, system, user in requests]
        return self._generator.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=self.temperature, batch_size=self.batch_size,
            stop=self.stop, top_logprobs=self.top_logprobs,
        )


class ReplayBackend:
    """Serves recorded outputs: a JSONL file of {"task_id", "text", ...usage fields}.

    A tool trajectory is recorded as ``"texts"``: one model turn per step; the loop asks for
    step *n* of a task with the key ``<task_id>#<n>`` (step 0 is the plain task id).
    """

    def __init__(self, path: str | Path, teacher_id: str, pace: bool = False) -> None:
        self.pace = pace
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"teacher '{teacher_id}': field 'replay_path': file not found: {path}")
        self.recordings: dict[str, dict] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("teacher_id", teacher_id) == teacher_id:
                    self.recordings[row["task_id"]] = row

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        out = []
        for key, _, _ in requests:
            task_id, _, step = key.partition("#")
            row = self.recordings.get(task_id)
            if row is None:
                raise LookupError(f"no recording for task {task_id}")
            texts = row.get("texts") or [row["text"]]
            if int(step or 0) >= len(texts):
                raise LookupError(f"no recording for step {step} of task {task_id}")
            text = texts[int(step or 0)]
            latency = float(row.get("latency_s", 0.0))
            if self.pace:
                time.sleep(latency)
            out.append(
                Generation(
                    text=text,
                    prompt_tokens=int(row.get("prompt_tokens", 0)),
                    completion_tokens=int(row.get("completion_tokens", len(text.split()))),
                    finish_reason=row.get("finish_reason", "stop"),
                    mean_token_prob=row.get("confidence"),
                    seconds=latency,
                )
            )
        return out


def make_backend(teacher: TeacherSpec, teacher_id: str, device: str = "cpu") -> Backend:
    """The backend a spec entry declares (a teacher, or a model the judge scores with)."""
    if teacher.backend == "replay":
        return ReplayBackend(teacher.replay_path or "", teacher_id, teacher.replay_pace)
    if teacher.backend == "openai":
        from distillery.openai_backend import OpenAIBackend

        return OpenAIBackend(teacher, teacher_id)
    return TransformersBackend(teacher.model, teacher.batch_size, teacher.temperature, device, stop=teacher.stop,
                               top_logprobs=teacher.logprobs)
