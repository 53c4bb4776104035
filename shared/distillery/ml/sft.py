"""Supervised fine-tuning of a student on (rendered prompt, target completion) pairs.

Loss is computed on target tokens only, per example, then combined with per-example weights so
that the curation stage can down-weight doubtful teacher outputs instead of dropping them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distillery.ml.models import ensure_pad_token

IGNORE_INDEX = -100


@dataclass
class Example:
    """A training pair: ``prompt`` is already rendered (chat template applied); ``target`` is the
    assistant text the student must produce. EOS is appended when tokenising, so the student also
    learns where to stop."""

    prompt: str
    target: str
    weight: float = 1.0
    stage: int = 0  # curriculum: all of stage 0 before stage 1 in every epoch, shuffled within a stage

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"example weight must be >= 0, got {self.weight}")


@dataclass
class TrainResult:
    """What a training run did. ``tokens`` counts non-padding tokens fed to the model."""

    loss_curve: list[float]
    steps: int
    tokens: int
    seconds: float
    dropped: list[int]


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_seq_len: int
) -> tuple[list[dict], list[int]]:
    """Tokenise prompt and target separately (as generation sees them) and mask prompt labels.

    An example longer than ``max_seq_len`` is dropped and its index returned, never truncated:
    a cut-off target would teach the student to stop mid-answer, a cut-off prompt to answer blind.
    """
    kept: list[dict] = []
    dropped: list[int] = []
    for index, example in enumerate(examples):
        prompt_ids = tokenizer(example.prompt)["input_ids"]
        target_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(target_ids) > max_seq_len:
            dropped.append(index)
            continue
        kept.append(
            {
                "input_ids": prompt_ids + target_ids,
                "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
                "weight": example.weight,
                "stage": example.stage,
                "index": index,
            }
        )
    return kept, dropped


def _collate(rows: list[dict], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(row["input_ids"]) for row in rows)
    input_ids, labels, mask = [], [], []
    for row in rows:
        pad = width - len(row["input_ids"])
        input_ids.append(row["input_ids"] + [pad_id] * pad)
        labels.append(row["labels"] + [IGNORE_INDEX] * pad)
        mask.append([1] * len(row["input_ids"]) + [0] * pad)
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "weights": torch.tensor([row["weight"] for row in rows], dtype=torch.float32, device=device),
    }


def _weighted_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted mean over examples of each example's mean next-token loss on its target tokens.

    Averaging per example first keeps long answers from dominating short ones. The output
    layer runs only at target positions: over a 49k vocabulary it dominates the cost, and
    prompt positions carry no loss.
    """
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    counted = labels != IGNORE_INDEX
    rows, cols = counted.nonzero(as_tuple=True)
    logits = model.get_output_embeddings()(hidden[:, :-1][rows, cols]).float()
    token_loss = F.cross_entropy(logits, labels[rows, cols], reduction="none")
    per_example = torch.zeros(labels.shape[0], device=token_loss.device).index_add_(0, rows, token_loss)
    example_loss = per_example / counted.sum(dim=1).clamp_min(1).float()
    weights = batch["weights"]
    return (example_loss * weights).sum() / weights.sum().clamp_min(1e-12)


def _batches(rows: list[dict], batch_size: int, epochs: int, shuffler: torch.Generator) -> list[list[dict]]:
    """All batches of the run in order: each epoch goes through the curriculum stages in order,
    reshuffling each stage from the seeded generator (one stage: a plain shuffled epoch)."""
    stages: dict[int, list[dict]] = {}
    for row in rows:
        stages.setdefault(row.get("stage", 0), []).append(row)
    batches = []
    for _ in range(epochs):
        for stage in sorted(stages):
            members = stages[stage]
            order = torch.randperm(len(members), generator=shuffler).tolist()
            batches.extend(
                [members[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)
            )
    return batches


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    *,
    max_seq_len: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    max_steps: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place with AdamW on the weighted target-token loss.

    Training stops after ``epochs`` passes or ``max_steps`` optimizer steps, whichever comes first.
    Runs on whatever device the model is on; the model is left in eval mode.
    """
    started = time.perf_counter()
    rows, dropped = tokenize_examples(tokenizer, examples, max_seq_len)
    if not rows:
        raise ValueError(f"no example fits max_seq_len={max_seq_len} ({len(dropped)} dropped)")
    torch.manual_seed(seed)
    batches = _batches(rows, batch_size, epochs, torch.Generator().manual_seed(seed))
    total_steps = len(batches) if max_steps is None else min(len(batches), max_steps)
    pad_id = ensure_pad_token(tokenizer).pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    loss_curve: list[float] = []
    tokens = 0
    model.train()
    for step, rows_in_batch in enumerate(batches[:total_steps], start=1):
        batch = _collate(rows_in_batch, pad_id, model.device)
        loss = _weighted_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_curve.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        if progress is not None:
            progress(step, total_steps, loss_curve[-1])
    model.eval()
    return TrainResult(loss_curve, total_steps, tokens, time.perf_counter() - started, dropped)


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save model and tokenizer side by side so :func:`distillery.ml.models.load_model` reads them back."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
