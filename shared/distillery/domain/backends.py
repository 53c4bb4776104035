"""Model backends behind one small interface: prompts in, generations out.

``transformers`` runs the model in-process (CPU or GPU, batched); ``replay``
serves recorded outputs keyed by task for reproducible runs and tests; ``openai``
(:mod:`distillery.domain.openai_backend`) talks to any OpenAI-compatible server. Teachers
generate with them, and the judge's model scorer asks its rubric through them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Protocol

from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import TeacherSpec
from distillery.domain.generate import Generation


class Backend(Protocol):
    """Generates for a teacher. A backend may set ``blocking = False`` when a batch is only a lookup
    (an unpaced replay): the teacher then answers on its event loop instead of in a worker thread."""

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
        from distillery.domain.generate import Generator
        from distillery.domain.models import load_model

        with self._lock:
            if self._generator is None:
                model, tokenizer = load_model(self.model_name, device=self.device)
                self._generator = Generator(model, tokenizer, device=self.device)

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        from distillery.domain.generate import render_chat

        self.load()
        tokenizer = self._generator.tokenizer
        prompts = [render_chat(tokenizer, system, user) for _, system, user in requests]
        return self._generator.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=self.temperature, batch_size=self.batch_size,
            stop=self.stop, top_logprobs=self.top_logprobs,
        )


class ReplayBackend:
    """Serves recorded outputs: a JSONL file with one row per (task, teacher).

    A row holds ``"steps"``: one recorded generation per model turn (a tool trajectory has
    several), each as :func:`generation_row` writes it (text, usage, latency, confidence, finish
    reason and, when the teacher cached them, top-k token logprobs). The loop asks for step *n* of
    a task with the key ``<task_id>#<n>`` (step 0 is the plain task id). Older rows with ``"text"``
    or ``"texts"`` and usage fields at the top level are read too.
    """

    def __init__(self, path: str | Path, teacher_id: str, pace: bool = False) -> None:
        self.pace = pace
        self.blocking = pace  # a paced replay sleeps each request's latency; an unpaced one is a lookup
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"teacher '{teacher_id}': field 'replay_path': file not found: {path}")
        self.recordings: dict[str, list[dict]] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("teacher_id", teacher_id) == teacher_id:
                    self.recordings[row["task_id"]] = recorded_steps(row)

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        out = []
        for key, _, _ in requests:
            task_id, _, step = key.partition("#")
            steps = self.recordings.get(task_id)
            if steps is None:
                raise LookupError(f"no recording for task {task_id}")
            if int(step or 0) >= len(steps):
                raise LookupError(f"no recording for step {step} of task {task_id}")
            gen = generation_from_row(steps[int(step or 0)])
            if self.pace:
                time.sleep(gen.seconds)
            out.append(gen)
        return out


def recorded_steps(row: dict) -> list[dict]:
    """A recording row's generations in step order, whichever of the row formats it uses."""
    if "steps" in row:
        return row["steps"]
    usage = {k: row[k] for k in ("prompt_tokens", "completion_tokens", "latency_s", "confidence", "finish_reason")
             if k in row}
    return [{"text": text, **usage} for text in row.get("texts") or [row["text"]]]


def generation_row(gen: Generation) -> dict:
    """One generation as a compact JSON-able dict (the inverse of :func:`generation_from_row`)."""
    row = {"text": gen.text, "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
           "latency_s": gen.seconds, "confidence": gen.mean_token_prob, "finish_reason": gen.finish_reason}
    if gen.error is not None:
        row["error"] = gen.error
    if gen.top_logprobs and gen.token_ids is not None and gen.tokenizer:
        row["logprobs"] = {"tokenizer": gen.tokenizer, "token_ids": gen.token_ids,
                           "top": [[[i for i, _ in pairs], [round(lp, 4) for _, lp in pairs]]
                                   for pairs in gen.top_logprobs]}  # candidates keep 4 decimals too
    return row


def generation_from_row(row: dict) -> Generation:
    text = row.get("text", "")
    logprobs = row.get("logprobs")
    return Generation(
        text=text,
        prompt_tokens=int(row.get("prompt_tokens", 0)),
        completion_tokens=int(row.get("completion_tokens", len(text.split()))),
        finish_reason=row.get("finish_reason", "stop"),
        mean_token_prob=row.get("confidence"),
        seconds=float(row.get("latency_s", 0.0)),
        error=row.get("error"),
        token_ids=logprobs["token_ids"] if logprobs else None,
        top_logprobs=[list(zip(ids, lps)) for ids, lps in logprobs["top"]] if logprobs else None,
        tokenizer=logprobs["tokenizer"] if logprobs else None,
    )


def make_backend(teacher: TeacherSpec, teacher_id: str, device: str = "cpu") -> Backend:
    """The backend a spec entry declares (a teacher, or a model the judge scores with)."""
    if teacher.backend == "replay":
        return ReplayBackend(teacher.replay_path or "", teacher_id, teacher.replay_pace)
    if teacher.backend == "openai":
        from distillery.domain.openai_backend import OpenAIBackend

        return OpenAIBackend(teacher, teacher_id)
    return TransformersBackend(teacher.model, teacher.batch_size, teacher.temperature, device, stop=teacher.stop,
                               top_logprobs=teacher.logprobs)
