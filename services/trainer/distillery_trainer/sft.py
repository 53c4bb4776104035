"""Supervised fine-tuning of a student on (rendered prompt, target completion) pairs.

Loss is computed on target tokens only, per example, then combined with per-example weights so
that the curation stage can down-weight doubtful teacher outputs instead of dropping them.
Training updates either every weight ("full") or low-rank adapters merged back at the end
("lora"), and can mix in logit distillation from the teacher's cached top-k log probabilities.
Batches group examples of similar token length, so little of the compute goes to padding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distillery.domain.models import ensure_pad_token
from distillery_trainer.kd import (
    PositionTops,
    TeacherTokens,
    kd_token_loss,
    match_teacher,
    pad_top_logprobs,
    restricted_kl,
)

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
    teacher: TeacherTokens | None = None  # the teacher's tokens and top-k logprobs, for logit distillation
    unit: str = ""  # the capability unit, only to report prompt and target lengths per unit

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"example weight must be >= 0, got {self.weight}")


@dataclass
class LoraOptions:
    """Low-rank adapter settings for ``train_sft(method="lora")``; the scale is ``alpha / r``."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # adapters only in the top N decoder layers (None: all). Nothing below them needs a gradient,
    # so backpropagation stops there: the step costs the forward pass plus a backward pass of N layers.
    top_layers: int | None = None


def lora_layers(model: PreTrainedModel, top_layers: int | None) -> list[int] | None:
    """The decoder layer indices that get adapters: the top ``top_layers`` of the model's (None: all)."""
    if top_layers is None:
        return None
    total = model.config.num_hidden_layers
    if not 1 <= top_layers <= total:
        raise ValueError(f"lora top_layers must be between 1 and the model's {total} layers, got {top_layers}")
    return list(range(total - top_layers, total))


@dataclass
class TrainResult:
    """What a training run did. ``tokens`` counts non-padding tokens fed to the model,
    ``padded_tokens`` all it was fed, padding included (their gap is compute spent on padding);
    ``trainable_params`` of ``total_params`` were updated (for LoRA, the adapters, counted in the
    total); ``kd_examples`` trained with the distillation term (0 when ``kd_weight`` is 0);
    ``prompt_tokens_per_unit`` describes the kept examples per ``Example.unit`` (see
    :func:`lengths_per_unit`)."""

    loss_curve: list[float]
    steps: int
    tokens: int
    padded_tokens: int
    seconds: float
    dropped: list[int]
    trainable_params: int
    total_params: int
    method: str
    kd_examples: int
    prompt_tokens_per_unit: dict[str, dict]


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_seq_len: int
) -> tuple[list[dict], list[int]]:
    """Tokenise prompt and target separately (as generation sees them) and mask prompt labels.

    An example longer than ``max_seq_len`` is dropped and its index returned, never truncated:
    a cut-off target would teach the student to stop mid-answer, a cut-off prompt to answer blind.
    Each row's ``teacher`` holds the teacher's top-k lists aligned to its target tokens when the
    example's teacher tokens match its tokenised target (see :func:`match_teacher`), else None.
    """
    kept: list[dict] = []
    dropped: list[int] = []
    for index, example in enumerate(examples):
        prompt_ids = tokenizer(example.prompt)["input_ids"]
        text_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"]
        target_ids = text_ids + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(target_ids) > max_seq_len:
            dropped.append(index)
            continue
        teacher = None if example.teacher is None else match_teacher(example.teacher, text_ids, tokenizer.eos_token_id)
        kept.append(
            {
                "input_ids": prompt_ids + target_ids,
                "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
                "weight": example.weight,
                "stage": example.stage,
                "unit": example.unit,
                "index": index,
                "target_start": len(prompt_ids),
                "teacher": teacher,
            }
        )
    return kept, dropped


def lengths_per_unit(rows: list[dict]) -> dict[str, dict]:
    """Per unit: the number of tokenised rows, their mean and max prompt tokens and mean target
    tokens (EOS included), so a run records how much context each unit's prompts take."""
    units: dict[str, list[dict]] = {}
    for row in rows:
        units.setdefault(row["unit"], []).append(row)
    stats = {}
    for unit, members in sorted(units.items()):
        prompts = [row["target_start"] for row in members]
        targets = [len(row["input_ids"]) - row["target_start"] for row in members]
        stats[unit] = {
            "examples": len(members),
            "prompt_tokens_mean": round(sum(prompts) / len(members), 2),
            "prompt_tokens_max": max(prompts),
            "target_tokens_mean": round(sum(targets) / len(members), 2),
        }
    return stats


def collate(
    rows: list[dict], pad_id: int, device: torch.device, with_teacher: bool = False
) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss.

    ``with_teacher`` adds the teacher's top-k ids and logprobs laid out like ``labels``; they are
    left out otherwise so plain SFT builds nothing it does not use.
    """
    width = max(len(row["input_ids"]) for row in rows)
    input_ids, labels, mask = [], [], []
    for row in rows:
        pad = width - len(row["input_ids"])
        input_ids.append(row["input_ids"] + [pad_id] * pad)
        labels.append(row["labels"] + [IGNORE_INDEX] * pad)
        mask.append([1] * len(row["input_ids"]) + [0] * pad)
    batch = {
        "input_ids": torch.tensor(input_ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "weights": torch.tensor([row["weight"] for row in rows], dtype=torch.float32, device=device),
    }
    if with_teacher:
        batch.update(_teacher_tensors(rows, width, device))
    return batch


def _teacher_tensors(rows: list[dict], width: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Teacher top-k ids and logprobs at each row's target positions, -inf logprobs elsewhere."""
    positions: list[PositionTops | None] = [
        None if row["teacher"] is None else [None] * row["target_start"] + row["teacher"] for row in rows
    ]
    k = max((len(pairs) for row in rows for pairs in row["teacher"] or []), default=1)
    ids, logprobs = pad_top_logprobs(positions, width, k)
    return {"teacher_ids": ids.to(device), "teacher_logprobs": logprobs.to(device)}


def _causal_lm(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The transformers model underneath a peft wrapper (whose ``base_model`` is the LoraModel,
    not the decoder); the LoRA layers live inside it, so calling it trains the adapters."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def target_logits(
    model: PreTrainedModel | PeftModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Float logits at every counted position of ``labels[:, 1:]``, and those (rows, cols).

    The output layer runs only at target positions: over a 49k vocabulary it dominates the cost,
    and prompt positions carry no loss.
    """
    lm = _causal_lm(model)
    hidden = lm.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    rows, cols = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return lm.get_output_embeddings()(hidden[:, :-1][rows, cols]).float(), (rows, cols)


def _per_example_mean(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of per-position ``values`` within each row (0 for a row with none), and the counts."""
    sums = torch.zeros(n_rows, device=values.device).index_add_(0, rows, values)
    counts = torch.bincount(rows, minlength=n_rows)
    return sums / counts.clamp_min(1).float(), counts


def _with_kd(
    example_loss: torch.Tensor,
    log_probs: torch.Tensor,
    logits: torch.Tensor,
    at: tuple[torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    kd_weight: float,
    kd_temperature: float,
) -> torch.Tensor:
    """Blend each example's CE with its mean KD loss over the positions where the teacher's
    top-k is known; examples without teacher tokens keep their plain CE."""
    rows, cols = at
    teacher_ids = batch["teacher_ids"][:, 1:][rows, cols]
    teacher_logprobs = batch["teacher_logprobs"][:, 1:][rows, cols]
    student = log_probs if kd_temperature == 1.0 else F.log_softmax(logits / kd_temperature, dim=-1)
    kd = kd_token_loss(student, teacher_ids, teacher_logprobs, kd_temperature)
    signal = torch.isfinite(teacher_logprobs).any(dim=-1)
    kd_loss, kd_counts = _per_example_mean(kd[signal], rows[signal], example_loss.shape[0])
    return torch.where(kd_counts > 0, (1 - kd_weight) * example_loss + kd_weight * kd_loss, example_loss)


def example_losses(
    model: PreTrainedModel | PeftModel,
    batch: dict[str, torch.Tensor],
    kd_weight: float = 0.0,
    kd_temperature: float = 1.0,
) -> torch.Tensor:
    """Each example's mean next-token loss on its own target tokens, one value per row.

    A row's value does not depend on what else is in the batch: padding sits after its tokens
    (causal attention never looks ahead) and is masked out of the loss, so length bucketing
    changes the batches, not what each example contributes. Cross entropy is spelled
    log-softmax + NLL (what ``F.cross_entropy`` does) so KD at T = 1 can share the log-softmax:
    over a 49k vocabulary each extra pass costs about as much as a small student's output layer.
    """
    logits, (rows, cols) = target_logits(model, batch)
    log_probs = F.log_softmax(logits, dim=-1)
    token_loss = F.nll_loss(log_probs, batch["labels"][:, 1:][rows, cols], reduction="none")
    example_loss, _ = _per_example_mean(token_loss, rows, batch["labels"].shape[0])
    if kd_weight > 0:
        example_loss = _with_kd(example_loss, log_probs, logits, (rows, cols), batch, kd_weight, kd_temperature)
    return example_loss


def _weighted_loss(
    model: PreTrainedModel | PeftModel,
    batch: dict[str, torch.Tensor],
    kd_weight: float = 0.0,
    kd_temperature: float = 1.0,
) -> torch.Tensor:
    """Weighted mean over examples of :func:`example_losses`: averaging per example first keeps
    long answers from dominating short ones."""
    weights = batch["weights"]
    loss = example_losses(model, batch, kd_weight, kd_temperature)
    return (loss * weights).sum() / weights.sum().clamp_min(1e-12)


MEGABATCH = 16  # batches per length-sorted group when bucketing


def _cut(rows: list[dict], batch_size: int) -> list[list[dict]]:
    return [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]


def _bucketed(shuffled: list[dict], batch_size: int, shuffler: torch.Generator) -> list[list[dict]]:
    """Batches of similar length from already shuffled rows, in random order.

    Each run of ``MEGABATCH`` batches' worth of rows is sorted by token count and cut, so a batch
    pads to a length close to its rows' own; sorting within a megabatch rather than the whole
    stage keeps which rows meet in a batch random. Shuffling the batches then keeps long and short
    ones spread over the epoch instead of a rising length ramp.
    """
    span = batch_size * MEGABATCH
    batches = []
    for start in range(0, len(shuffled), span):
        megabatch = sorted(shuffled[start : start + span], key=lambda row: len(row["input_ids"]))
        batches.extend(_cut(megabatch, batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=shuffler).tolist()]


def _batches(
    rows: list[dict], batch_size: int, epochs: int, shuffler: torch.Generator, bucket: bool = False
) -> list[list[dict]]:
    """All batches of the run in order: each epoch goes through the curriculum stages in order,
    reshuffling each stage from the seeded generator (one stage: a plain shuffled epoch).

    ``bucket`` groups rows of similar length (their ``input_ids``) into the same batch (see
    :func:`_bucketed`); every row still appears exactly once per epoch, in its own stage.
    """
    stages: dict[int, list[dict]] = {}
    for row in rows:
        stages.setdefault(row.get("stage", 0), []).append(row)
    batches = []
    for _ in range(epochs):
        for stage in sorted(stages):
            members = stages[stage]
            shuffled = [members[i] for i in torch.randperm(len(members), generator=shuffler).tolist()]
            batches.extend(_bucketed(shuffled, batch_size, shuffler) if bucket else _cut(shuffled, batch_size))
    return batches


Method = Literal["full", "lora"]


def _check_options(method: str, lora: LoraOptions | None, kd_weight: float, kd_temperature: float) -> None:
    """Reject settings that would otherwise train something other than what was asked for."""
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', got {method!r}")
    if lora is not None and method != "lora":
        raise ValueError(f"LoRA options given but method is {method!r}")
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must be in [0, 1], got {kd_weight}")
    if kd_temperature <= 0:
        raise ValueError(f"kd_temperature must be > 0, got {kd_temperature}")


@contextmanager
def _trainable(model: PreTrainedModel, method: Method, lora: LoraOptions | None) -> Iterator[torch.nn.Module]:
    """Yield the module to optimise: ``model`` itself, or ``model`` with LoRA adapters injected.

    Adapters are merged into ``model``'s own weights on success (removed on failure), and the
    ``requires_grad`` flags peft switched off are restored, so the caller keeps one plain
    transformers model that saves and loads like any other.
    """
    if method == "full":
        yield model
        return
    options = lora or LoraOptions()
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        layers_to_transform=lora_layers(model, options.top_layers),
    )
    wrapped = get_peft_model(model, config)
    try:
        yield wrapped
    except BaseException:
        wrapped.unload()
        raise
    else:
        merged = wrapped.merge_and_unload()
        if merged is not model:  # peft merges in place today; copy back should that ever change
            model.load_state_dict(merged.state_dict())
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])


def _optimise(
    trained: torch.nn.Module,
    batches: list[list[dict]],
    pad_id: int,
    learning_rate: float,
    kd_weight: float,
    kd_temperature: float,
    progress: Callable[[int, int, float], None] | None,
) -> tuple[list[float], int, int]:
    """AdamW over the trainable parameters, one step per batch; returns the loss curve and the
    numbers of non-padding and of all (padding included) tokens fed."""
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=learning_rate)
    device = _causal_lm(trained).device
    loss_curve: list[float] = []
    tokens = padded_tokens = 0
    trained.train()
    for step, rows_in_batch in enumerate(batches, start=1):
        batch = collate(rows_in_batch, pad_id, device, with_teacher=kd_weight > 0)
        loss = _weighted_loss(trained, batch, kd_weight, kd_temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_curve.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["attention_mask"].numel()
        if progress is not None:
            progress(step, len(batches), loss_curve[-1])
    trained.eval()
    return loss_curve, tokens, padded_tokens


def _count_kd_examples(rows: list[dict], kd_weight: float) -> int:
    """Examples that will train with the KD term; asking for KD with none is a data mistake."""
    if kd_weight == 0:
        return 0
    matched = sum(row["teacher"] is not None for row in rows)
    if not matched:
        raise ValueError(
            "logit distillation requested but no example carries teacher tokens that match its target "
            f"(kd_weight={kd_weight}; {len(rows)} examples): attach TeacherTokens from a teacher run with "
            "top_logprobs > 0 and train on the teacher's own text, or set kd_weight=0"
        )
    return matched


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
    method: Method = "full",
    lora: LoraOptions | None = None,
    kd_weight: float = 0.0,
    kd_temperature: float = 1.0,
    bucket: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` in place with AdamW on the weighted target-token loss.

    ``method="lora"`` trains only low-rank adapters (``lora``, defaults if None) and merges them
    into ``model`` at the end. With ``kd_weight`` > 0, each example carrying matching teacher
    tokens trains on ``(1 - kd_weight) * CE + kd_weight * KD`` (see :func:`kd_token_loss`).
    Training stops after ``epochs`` passes or ``max_steps`` optimizer steps, whichever comes first.
    ``bucket`` batches examples of similar token length together (less padding, the same
    per-example losses); ``bucket=False`` cuts plain shuffled batches.
    Runs on whatever device the model is on; the model is left in eval mode.
    """
    started = time.perf_counter()
    _check_options(method, lora, kd_weight, kd_temperature)
    rows, dropped = tokenize_examples(tokenizer, examples, max_seq_len)
    if not rows:
        raise ValueError(f"no example fits max_seq_len={max_seq_len} ({len(dropped)} dropped)")
    kd_examples = _count_kd_examples(rows, kd_weight)
    torch.manual_seed(seed)
    batches = _batches(rows, batch_size, epochs, torch.Generator().manual_seed(seed), bucket=bucket)
    batches = batches if max_steps is None else batches[:max_steps]
    pad_id = ensure_pad_token(tokenizer).pad_token_id
    with _trainable(model, method, lora) as trained:
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trained.parameters())
        loss_curve, tokens, padded_tokens = _optimise(
            trained, batches, pad_id, learning_rate, kd_weight, kd_temperature, progress
        )
    model.eval()
    return TrainResult(
        loss_curve=loss_curve,
        steps=len(batches),
        tokens=tokens,
        padded_tokens=padded_tokens,
        seconds=time.perf_counter() - started,
        dropped=dropped,
        trainable_params=trainable,
        total_params=total,
        method=method,
        kd_examples=kd_examples,
        prompt_tokens_per_unit=lengths_per_unit(rows),
    )


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save model and tokenizer side by side so :func:`distillery.domain.models.load_model` reads them back."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def kl_to_teacher(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_seq_len: int,
    batch_size: int = 8,
) -> float:
    """Mean per-token :func:`restricted_kl` over the target positions of examples whose teacher
    tokens match their target; a held-out measure of how closely a student follows the teacher.

    Runs in eval mode without gradients and puts the model back in the mode it was in.
    """
    rows = [row for row in tokenize_examples(tokenizer, examples, max_seq_len)[0] if row["teacher"] is not None]
    if not rows:
        raise ValueError("no example carries teacher tokens that match its target")
    pad_id = ensure_pad_token(tokenizer).pad_token_id
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start : start + batch_size], pad_id, model.device, with_teacher=True)
            logits, (rows_at, cols_at) = target_logits(model, batch)
            teacher_ids = batch["teacher_ids"][:, 1:][rows_at, cols_at]
            teacher_logprobs = batch["teacher_logprobs"][:, 1:][rows_at, cols_at]
            signal = torch.isfinite(teacher_logprobs).any(dim=-1)
            kl = restricted_kl(logits[signal], teacher_ids[signal], teacher_logprobs[signal])
            total += kl.sum().item()
            count += kl.numel()
    model.train(was_training)
    return total / count
